"""Common image corruptions at five severities.

Hendrycks and Dietterich 2019, "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations", https://arxiv.org/abs/1903.12261. Constants are those of
CIFAR-10-C (the small-image set), written for images scaled to [0, 1]; the input bounds
`(lo, hi)` are mapped to [0, 1] before corrupting and back after. `Rotation` and `Shift`
follow the paper's ImageNet-P perturbations (small rotations and translations).

The threat's `budget` is the SEVERITY, an integer 1..5 (1 mildest); any other value
raises `ThreatError` (0 leaves the inputs unchanged, as every threat does at budget 0).
The norm is "none": the output is clamped to the input bounds, never projected onto a
ball. Inputs are images of shape `(c, h, w)` or `(h, w)`; the pixel-wise corruptions
(noise, brightness, contrast) accept any shape. Random draws (noise, the direction of a
rotation or shift) come from the generator: the same seed gives the same corruption.
No corruption takes arguments.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from hardenml.targets import Target
from hardenml.targets.preprocessing import jpeg_roundtrip
from hardenml.threats.base import Access, Family, Norm, Threat, ThreatError


class Corruption(Threat):
    """Shared checks and scaling; subclasses corrupt a `(n, c, h, w)` batch in [0, 1]."""

    norm: ClassVar[Norm] = "none"
    needs_gradients: ClassVar[bool] = False
    family: ClassVar[Family] = "corruption"
    access: ClassVar[Access] = "labels"
    severities: ClassVar[tuple[float, ...]]
    spatial: ClassVar[bool] = True

    def run(
        self, target: Target, x: Tensor, y: Tensor, budget: float, generator: torch.Generator
    ) -> Tensor:
        if budget not in (1, 2, 3, 4, 5):
            raise ThreatError(
                f"{type(self).__name__} takes the severity as its budget, an integer 1..5; "
                f"got {budget}"
            )
        shape = tuple(x.shape[1:])
        if len(shape) == 3:
            layout = shape
        elif len(shape) == 2:
            layout = (1, *shape)
        elif not self.spatial:
            layout = (1, 1, x[0].numel())
        else:
            raise ThreatError(
                f"{type(self).__name__} needs image inputs of shape (c, h, w) or (h, w); the "
                f"model declares input shape {shape}"
            )
        lo, hi = target.input_spec.bounds
        images = ((x - lo) / (hi - lo)).reshape(x.shape[0], *layout)
        out = self.corrupt(images, self.severities[int(budget) - 1], generator)
        return (lo + (hi - lo) * out.clamp(0.0, 1.0)).reshape(x.shape)

    @abstractmethod
    def corrupt(self, images: Tensor, level: float, generator: torch.Generator) -> Tensor:
        """`images` of shape `(n, c, h, w)` in [0, 1], corrupted at `level`."""


def _normal(like: Tensor, generator: torch.Generator) -> Tensor:
    noise = torch.randn(like.shape, generator=generator, device=generator.device)
    return noise.to(like.device, like.dtype)


class GaussianNoise(Corruption):
    """Additive Gaussian noise; `level` is its standard deviation."""

    severities = (0.04, 0.06, 0.08, 0.09, 0.10)
    spatial = False

    def corrupt(self, images: Tensor, level: float, generator: torch.Generator) -> Tensor:
        return images + level * _normal(images, generator)


class ShotNoise(Corruption):
    """Poisson (photon) noise: `Poisson(x * level) / level`, stronger at lower levels."""

    severities = (500.0, 250.0, 100.0, 75.0, 50.0)
    spatial = False

    def corrupt(self, images: Tensor, level: float, generator: torch.Generator) -> Tensor:
        rate = (images * level).to(generator.device, torch.float64)
        return (torch.poisson(rate, generator=generator) / level).to(images.device, images.dtype)


class GaussianBlur(Corruption):
    """Gaussian blur; `level` is the kernel's standard deviation in pixels."""

    severities = (0.4, 0.6, 0.7, 0.8, 1.0)

    def corrupt(self, images: Tensor, level: float, generator: torch.Generator) -> Tensor:
        radius = max(1, math.ceil(3 * level))
        taps = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
        kernel = torch.exp(-(taps**2) / (2 * level**2))
        kernel = kernel / kernel.sum()
        c = images.shape[1]
        # Separable: blur the rows, then the columns; border pixels repeat outwards.
        rows = kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1)
        out = F.conv2d(F.pad(images, (radius, radius, 0, 0), mode="replicate"), rows, groups=c)
        cols = kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1)
        return F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), cols, groups=c)


class Brightness(Corruption):
    """Raise the HSV value channel by `level`, keeping hue and saturation.

    Scaling every channel of a pixel by `(v + level) / v` (v its largest channel) is that
    HSV edit without the round trip; for grey images it is `x + level`.
    """

    severities = (0.05, 0.1, 0.15, 0.2, 0.3)
    spatial = False

    def corrupt(self, images: Tensor, level: float, generator: torch.Generator) -> Tensor:
        value = images.amax(dim=1, keepdim=True)
        brighter = (value + level).clamp(max=1.0)
        scale = brighter / value.clamp_min(1e-12)
        return torch.where(value > 0, images * scale, brighter.expand_as(images))


class Contrast(Corruption):
    """Pull every pixel towards the image mean: `(x - mean) * level + mean`."""

    severities = (0.75, 0.5, 0.4, 0.3, 0.15)
    spatial = False

    def corrupt(self, images: Tensor, level: float, generator: torch.Generator) -> Tensor:
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        return (images - mean) * level + mean


class JPEGCompression(Corruption):
    """JPEG re-encoding at quality `level` (PIL); grey or RGB, other channels one by one."""

    severities = (80, 65, 58, 50, 40)

    def corrupt(self, images: Tensor, level: float, generator: torch.Generator) -> Tensor:
        return jpeg_roundtrip(images, int(level))


def _warp(images: Tensor, theta: Tensor) -> Tensor:
    """Bilinear resampling under per-image affine maps `theta` (n, 2, 3); edges repeat."""
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _directions(n: int, generator: torch.Generator, like: Tensor) -> Tensor:
    bits = torch.randint(0, 2, (n,), generator=generator, device=generator.device)
    return (2 * bits - 1).to(like.device, like.dtype)


class Rotation(Corruption):
    """Rotation by `level` degrees, clockwise or anticlockwise at random."""

    severities = (3.0, 6.0, 9.0, 12.0, 15.0)

    def corrupt(self, images: Tensor, level: float, generator: torch.Generator) -> Tensor:
        n = images.shape[0]
        angle = math.radians(level) * _directions(n, generator, images)
        cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
        theta = torch.stack(
            [torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1
        )
        return _warp(images, theta)


class Shift(Corruption):
    """Translation by `level` of the image's size (sub-pixel: bilinear), random heading."""

    severities = (0.03, 0.06, 0.09, 0.12, 0.15)

    def corrupt(self, images: Tensor, level: float, generator: torch.Generator) -> Tensor:
        n = images.shape[0]
        heading = 2 * math.pi * torch.rand(n, generator=generator, device=generator.device)
        heading = heading.to(images.device, images.dtype)
        # Grid coordinates span [-1, 1], so a shift by a fraction f of the size is 2f.
        dx, dy = 2 * level * heading.cos(), 2 * level * heading.sin()
        one, zero = torch.ones_like(dx), torch.zeros_like(dx)
        theta = torch.stack([torch.stack([one, zero, dx], 1), torch.stack([zero, one, dy], 1)], 1)
        return _warp(images, theta)
