"""Text as fixed-width tensors of Unicode code points, so strings travel the one attack loop.

The scan, the validator, checkpoints and evidence files all carry inputs as arrays
(`.npz`, never pickle). A text target declares `InputSpec(modality="text")` with shape
`(max_chars,)`: each row holds one string's code points, padded with 0 (NUL never occurs
in text, and the codec refuses a string that holds it). The target decodes at its edge;
text threats decode, edit the strings and encode again. The bounds of such a spec are the
code-point range, not a perturbation budget: a text threat bounds its own edits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

MAX_CODE_POINT = 0x10FFFF
PAD = 0


class TextCodecError(ValueError):
    """A string that cannot be encoded; the message names the row and the fix."""


def encode_texts(texts: Sequence[str], width: int) -> np.ndarray:
    """`texts` as an int32 array `(n, width)` of code points, 0-padded.

    Raises `TextCodecError` naming the first row that is not a string, holds NUL, or is
    longer than `width` characters."""
    out = np.zeros((len(texts), width), dtype=np.int32)
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise TextCodecError(
                f"row {row} is a {type(text).__name__}, not a string: every input of a text "
                "model is one string"
            )
        if "\x00" in text:
            raise TextCodecError(f"row {row} holds a NUL character, which text never holds")
        if len(text) > width:
            raise TextCodecError(
                f"row {row} has {len(text)} characters, more than the model's "
                f"{width} (model.input.shape = [{width}]): raise it or shorten the input"
            )
        codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
        out[row, : len(codes)] = codes
    return out


def encode_tensor(texts: Sequence[str], width: int) -> Tensor:
    """`encode_texts` as a tensor."""
    return torch.from_numpy(encode_texts(texts, width))


def decode_texts(codes: Tensor | np.ndarray) -> list[str]:
    """The strings of an `(n, width)` array of code points (padding dropped)."""
    array = codes.detach().cpu().numpy() if isinstance(codes, Tensor) else np.asarray(codes)
    if array.ndim != 2:
        raise TextCodecError(f"encoded text has shape {list(array.shape)}; expected (n, width)")
    rows = array.astype("<u4", copy=False)
    return [
        np.ascontiguousarray(row[row != PAD]).tobytes().decode("utf-32-le", errors="replace")
        for row in rows
    ]


def fits(text: str, width: int) -> bool:
    """Whether `text` encodes in `width` characters (an edit that grows a string past the
    model's width is not a candidate)."""
    return len(text) <= width and "\x00" not in text
