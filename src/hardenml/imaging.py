"""Inputs as small PNG images (evidence thumbnails, report images), without an imaging library.

PNG: https://www.w3.org/TR/png/ (8-bit greyscale or RGB, one zlib stream, filter 0).
"""

from __future__ import annotations

import base64
import math
import struct
import zlib

import numpy as np

THUMBNAIL_MIN_PX = 64


def to_pixels(x: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """A (C, H, W) or (H, W) input in `bounds` as uint8 (H, W) or (H, W, 3) pixels."""
    lo, hi = bounds
    scaled = np.clip((np.asarray(x, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)
    pixels = np.rint(scaled * 255).astype(np.uint8)
    if pixels.ndim == 3:
        pixels = pixels[0] if pixels.shape[0] == 1 else np.transpose(pixels, (1, 2, 0))
    return pixels


def delta_pixels(delta: np.ndarray) -> np.ndarray:
    """A signed change as pixels: grey where nothing changed, white for the largest increase,
    black for the largest decrease (one scale for all channels)."""
    d = np.asarray(delta, dtype=np.float64)
    top = float(np.abs(d).max()) if d.size else 0.0
    scaled = d / top if top > 0 else d
    pixels = np.rint(127.5 + 127.5 * scaled).astype(np.uint8)
    if pixels.ndim == 3:
        pixels = pixels[0] if pixels.shape[0] == 1 else np.transpose(pixels, (1, 2, 0))
    return pixels


def upscale(pixels: np.ndarray, min_px: int = THUMBNAIL_MIN_PX) -> np.ndarray:
    """Nearest-neighbour enlargement by a whole factor, so tiny inputs stay crisp."""
    factor = max(1, math.ceil(min_px / max(pixels.shape[:2])))
    return np.repeat(np.repeat(pixels, factor, axis=0), factor, axis=1)


def png_bytes(pixels: np.ndarray) -> bytes:
    """Encode uint8 (H, W) greyscale or (H, W, 3) RGB pixels as a PNG file."""
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise ValueError(
            f"need uint8 (H, W) or (H, W, 3) pixels, got {pixels.dtype} {pixels.shape}"
        )
    if pixels.ndim == 3 and pixels.shape[2] != 3:
        raise ValueError(f"colour pixels need 3 channels, got {pixels.shape[2]}")
    height, width = pixels.shape[:2]
    colour_type = 0 if pixels.ndim == 2 else 2
    rows = np.ascontiguousarray(pixels).reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 9))
        + _chunk(b"IEND", b"")
    )


def png_data_uri(pixels: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(pixels)).decode("ascii")


def _chunk(tag: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(tag + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)
