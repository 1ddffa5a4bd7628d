"""Input sanitisers: the model behind a layer that checks and squeezes its inputs.

- `range_check`: schema and range validation. Inputs must be finite and inside the
  declared bounds (or the per-feature range seen in training, `source="data"`); with
  `mode="clip"` they are clipped (non-finite values set to the lower bound), with
  `mode="reject"` the model refuses the batch with an error naming what was wrong.
- `bit_depth`: bit-depth reduction to `bits` bits per value. `median_filter`: a
  `size` x `size` median filter per channel of (C, H, W) images. Both from Xu, Evans &
  Qi 2018, "Feature Squeezing: Detecting Adversarial Examples in Deep Neural Networks",
  https://arxiv.org/abs/1704.01155 (their MNIST setting: 1 bit, or 2x2/3x3 median).

Quantisation has no useful gradient, which would make gradient attacks fail without the
model being robust (gradient masking). So the backward pass of bit-depth reduction is
the identity, as in BPDA: Athalye, Carlini & Wagner 2018, "Obfuscated Gradients Give a
False Sense of Security", https://arxiv.org/abs/1802.00420. Scans of the sanitised model
therefore measure what an adaptive attacker achieves.

The wrapper works in the raw input space: it undoes the target's normalisation (`mean`,
`std`), sanitises, and normalises again before the parent model. Around a TorchScript
model the wrapper is scripted (its settings compile in as constants).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hardenml.patch.base import (
    Patch,
    PatchContext,
    PatchError,
    PatchResult,
    copy_module,
    like,
    target_logits,
    torch_parts,
    wrapped,
)
from hardenml.targets.loading import import_factory

Mode = Literal["clip", "reject"]


class Sanitized(nn.Module):
    """Validate, then squeeze, the raw input; then the parent model on the result."""

    def __init__(
        self,
        inner: nn.Module,
        *,
        shape: list[int],
        bounds: list[float],
        mean: list[float] | None = None,
        std: list[float] | None = None,
        mode: Mode = "clip",
        bits: int | None = None,
        median: int | None = None,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.mode = mode
        self.bits = bits
        self.median = median
        view = (1, len(mean)) + (1,) * (len(shape) - 1) if mean else (1,)
        self.mean: Tensor
        self.std: Tensor
        self.low: Tensor
        self.high: Tensor
        self.register_buffer("mean", torch.tensor(mean or [0.0]).reshape(view))
        self.register_buffer("std", torch.tensor(std or [1.0]).reshape(view))
        # Per-feature range, bounds until fitted on data; saved with the weights.
        self.register_buffer("low", torch.full((1, *shape), float(bounds[0])))
        self.register_buffer("high", torch.full((1, *shape), float(bounds[1])))

    def forward(self, x: Tensor) -> Tensor:
        raw = x * self.std + self.mean
        raw = self._validate(raw)
        if self.bits is not None:
            levels = 2**self.bits - 1
            span = self.high - self.low
            squeezed = torch.round((raw - self.low) / span * levels) / levels * span + self.low
            raw = raw + (squeezed - raw).detach()  # straight-through: BPDA's identity backward
        if self.median is not None:
            raw = median_filter(raw, self.median)
        return self.inner((raw - self.mean) / self.std)

    def _validate(self, raw: Tensor) -> Tensor:
        finite = torch.isfinite(raw)
        # A little slack: normalising and back costs float32 a few ulps.
        outside = (raw < self.low - 1e-4) | (raw > self.high + 1e-4)
        if self.mode == "reject" and (not bool(finite.all()) or bool(outside.any())):
            raise ValueError(
                f"input rejected by the range check: {int((~finite).sum())} non-finite and "
                f"{int(outside.sum())} out-of-range values in a batch of {raw.shape[0]}"
            )
        raw = torch.where(finite, raw, self.low.expand_as(raw))
        return torch.max(torch.min(raw, self.high), self.low)


def median_filter(x: Tensor, size: int) -> Tensor:
    """Median over each `size` x `size` window of (n, C, H, W) images, reflect-padded."""
    left = (size - 1) // 2
    padded = F.pad(x, (left, size - 1 - left, left, size - 1 - left), mode="reflect")
    windows = padded.unfold(2, size, 1).unfold(3, size, 1)
    return windows.flatten(start_dim=4).median(dim=-1).values


def sanitized(
    factory: str, factory_kwargs: dict[str, Any] | None = None, **settings: Any
) -> Sanitized:
    """Model factory for the artifact: the parent built by `factory`, sanitised."""
    return Sanitized(import_factory(factory)(**(factory_kwargs or {})), **settings)


class _Sanitizer(Patch):
    """Shared `run`: wrap the parent, fit the range if asked, compare holdout accuracy."""

    kinds: ClassVar[tuple[str, ...]] = ("pytorch", "torchscript")

    def settings(self) -> dict[str, Any]:
        return {}

    def fit_range(self) -> bool:
        return False

    def run(self, ctx: PatchContext) -> PatchResult:
        parent, spec = torch_parts(ctx.target)
        settings = {
            "shape": list(spec.shape),
            "bounds": list(spec.bounds),
            "mean": list(spec.mean) if spec.mean else None,
            "std": list(spec.std) if spec.std else None,
            **self.settings(),
        }
        # TOML has no null: unset settings are left out and take the wrapper's defaults.
        settings = {k: v for k, v in settings.items() if v is not None}
        if settings.get("median") is not None and len(spec.shape) != 3:
            raise PatchError(
                f"median filtering needs image inputs (C, H, W); the model takes {spec.shape}"
            )
        sanitizer = Sanitized(copy_module(parent), **settings)
        if self.fit_range():
            x = torch.from_numpy(ctx.fit.x)
            sanitizer.low.copy_(x.amin(dim=0, keepdim=True))
            sanitizer.high.copy_(x.amax(dim=0, keepdim=True))
        module, factory, kwargs = wrapped(
            ctx, sanitizer, factory="hardenml.patch.sanitizers:sanitized", settings=settings
        )
        target = like(ctx.target, module)
        y = ctx.holdout.y
        before = target_logits(ctx.target, ctx.holdout.x).argmax(axis=1) == y
        after = target_logits(target, ctx.holdout.x).argmax(axis=1) == y
        metrics = {
            "holdout_n": len(y),
            "clean_accuracy_before": float(np.mean(before)),
            "clean_accuracy_after": float(np.mean(after)),
        }
        return PatchResult(target=target, factory=factory, factory_kwargs=kwargs, metrics=metrics)


class RangeCheck(_Sanitizer):
    """Schema and range validation. `source`: "bounds" (model.input.bounds) or "data"
    (per-feature min/max of the training data); `mode`: "clip" or "reject"."""

    def __init__(
        self, *, mode: Mode = "clip", source: Literal["bounds", "data"] = "bounds"
    ) -> None:
        self.mode = mode
        self.source = source

    def settings(self) -> dict[str, Any]:
        if self.mode not in ("clip", "reject") or self.source not in ("bounds", "data"):
            raise PatchError("range_check: mode is 'clip' or 'reject', source 'bounds' or 'data'")
        return {"mode": self.mode}

    def fit_range(self) -> bool:
        return self.source == "data"


class BitDepthReduction(_Sanitizer):
    """Round each value to `bits` bits over the valid range (default 4)."""

    def __init__(self, *, bits: int = 4) -> None:
        self.bits = bits

    def settings(self) -> dict[str, Any]:
        if not 1 <= self.bits <= 16:
            raise PatchError(f"bit_depth: bits must be between 1 and 16, got {self.bits}")
        return {"bits": self.bits}


class MedianFilter(_Sanitizer):
    """A `size` x `size` median filter per image channel (default 2, Xu et al.'s MNIST)."""

    # Removes the pixel noise of noise corruptions before the model sees it.
    addresses: ClassVar[tuple[str, ...]] = ("corruption",)
    summary: ClassVar[str] = "a median filter in front of the model (removes pixel noise)"

    def __init__(self, *, size: int = 2) -> None:
        self.size = size

    def settings(self) -> dict[str, Any]:
        if not 2 <= self.size <= 7:
            raise PatchError(f"median_filter: size must be between 2 and 7, got {self.size}")
        return {"median": self.size}
