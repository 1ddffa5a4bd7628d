"""Declared preprocessing: run exactly on the way in, the identity on the way back (BPDA).

A defence that squeezes its input through a step with no useful gradient (quantisation,
bit-depth reduction, JPEG) makes gradient attacks fail without making the model robust.
Athalye, Carlini & Wagner 2018, "Obfuscated Gradients Give a False Sense of Security",
https://arxiv.org/abs/1802.00420, section 4.1: Backward Pass Differentiable Approximation
(BPDA) attacks such a model by running the real preprocessing g in the forward pass and
taking its derivative as the identity in the backward pass, since g(x) is close to x; the
gradient of f(g(x)) is then read as f's gradient at g(x).

`model.preprocessing` (validated in `hardenml.config`, names in `PREPROCESSING_STEPS`)
lists such steps in the order the deployed model applies them, each `name:value`:

- `bit-depth:B`: round each value to `2**B` levels across the input bounds (Xu, Evans &
  Qi 2018, "Feature Squeezing", https://arxiv.org/abs/1704.01155);
- `quantize:L`: round each value to `L` evenly spaced levels across the input bounds;
- `jpeg:Q`: JPEG-encode and decode at quality Q (PIL), images of shape `(c, h, w)` with
  1 or 3 channels, or `(h, w)` (Guo et al. 2018, "Countering Adversarial Images using
  Input Transformations", https://arxiv.org/abs/1711.00117).

Every `Target` applies them in `logits`, in the raw input space and before its own
normalisation, so clean accuracy, black-box attacks and gradient attacks all see the
model as it is deployed, and gradient attacks get BPDA gradients. The model file itself
must then hold the classifier without that step: a step left inside the model file still
has its zero gradient, and declaring it again cannot bring one back.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor


class _StraightThrough(torch.autograd.Function):
    """Forward: the preprocessed value, exactly. Backward: the gradient passes unchanged."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, processed: Tensor) -> Tensor:
        return processed.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def _levels(x: Tensor, levels: int, bounds: tuple[float, float]) -> Tensor:
    lo, hi = bounds
    steps = levels - 1
    return torch.round((x - lo) / (hi - lo) * steps) / steps * (hi - lo) + lo


def jpeg_roundtrip(images: Tensor, quality: int) -> Tensor:
    """JPEG-encode and decode images of shape `(n, c, h, w)` in [0, 1] at `quality` (PIL):
    RGB when there are 3 channels, each channel as a grey image otherwise."""
    from PIL import Image

    pixels = (images.detach().cpu().numpy() * 255).round().astype(np.uint8)
    out = np.empty_like(pixels)
    for i, image in enumerate(pixels):
        planes = [image.transpose(1, 2, 0)] if image.shape[0] == 3 else list(image)
        decoded = []
        for plane in planes:
            buffer = io.BytesIO()
            Image.fromarray(plane).save(buffer, format="JPEG", quality=int(quality))
            decoded.append(np.asarray(Image.open(buffer)))
        out[i] = decoded[0].transpose(2, 0, 1) if image.shape[0] == 3 else np.stack(decoded)
    return torch.from_numpy(out).to(images.device, images.dtype) / 255


def _jpeg(x: Tensor, quality: int, bounds: tuple[float, float]) -> Tensor:
    lo, hi = bounds
    images = (x - lo) / (hi - lo)
    layout = images.unsqueeze(1) if images.ndim == 3 else images
    return lo + (hi - lo) * jpeg_roundtrip(layout.clamp(0.0, 1.0), quality).view_as(x)


_STEPS: dict[str, Callable[[Tensor, int, tuple[float, float]], Tensor]] = {
    "bit-depth": lambda x, bits, bounds: _levels(x, 2**bits, bounds),
    "quantize": _levels,
    "jpeg": _jpeg,
}


def preprocess(x: Tensor, steps: Sequence[str], bounds: tuple[float, float]) -> Tensor:
    """`x` through each declared step (`name:value`) in order; where `x` takes gradients,
    each step's backward pass is the identity."""
    for step in steps:
        name, _, value = step.partition(":")
        processed = _STEPS[name](x.detach(), int(value), bounds)
        tracked = torch.is_grad_enabled() and x.requires_grad
        x = _StraightThrough.apply(x, processed) if tracked else processed
    return x
