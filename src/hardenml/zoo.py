"""Small reference architectures, importable as model factories (`hardenml.zoo:mnist_cnn`).

The demo and the tests train these on real data; users point `model.factory` at
their own module the same way.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _two_conv_cnn(side: int, kernel: int, channels: int, hidden: int) -> nn.Module:
    """Two conv + ReLU + 2x2 max-pool stages and two dense layers, for 1 x side x side."""
    pad = kernel // 2
    return nn.Sequential(
        nn.Conv2d(1, channels, kernel, padding=pad),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(channels, 2 * channels, kernel, padding=pad),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * channels * (side // 4) ** 2, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 10),
    )


def mnist_cnn(channels: int = 16, hidden: int = 64) -> nn.Module:
    """A two-layer CNN for 1x28x28 digits: about 60k parameters, trains in seconds on a CPU."""
    return _two_conv_cnn(28, 5, channels, hidden)


def mlp(in_features: int, classes: int, hidden: int = 64) -> nn.Module:
    """A one-hidden-layer perceptron for flat tabular or small-image inputs."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, classes)
    )


def digits_cnn(channels: int = 16, hidden: int = 64) -> nn.Module:
    """The same shape with 3x3 kernels for scikit-learn's 1x8x8 digits: trains in seconds."""
    return _two_conv_cnn(8, 3, channels, hidden)


# Models that defeat gradient attacks in the ways Athalye, Carlini and Wagner 2018,
# "Obfuscated Gradients Give a False Sense of Security" (https://arxiv.org/abs/1802.00420)
# and Tramer et al. 2020, "On Adaptive Attacks to Adversarial Example Defenses"
# (https://arxiv.org/abs/2002.08347) describe. Each wraps an honest classifier; none makes
# it more robust to an attacker who works around the gradients. The integrity checks
# (`hardenml.scan.integrity`) are calibrated on them (`hardenml.integrity_zoo`).


class QuantisedInput(nn.Module):
    """Rounds each input value to `levels` steps of the range `bounds` before the
    classifier (bit-depth reduction, Xu et al. 2018, "Feature Squeezing",
    https://arxiv.org/abs/1704.01155): the gradient is zero almost everywhere."""

    def __init__(
        self, model: nn.Module, *, levels: int = 4, bounds: tuple[float, float] = (0.0, 1.0)
    ) -> None:
        super().__init__()
        self.model, self.levels, self.bounds = model, levels, bounds

    def forward(self, x: Tensor) -> Tensor:
        lo, hi = self.bounds
        unit = (x - lo) / (hi - lo)
        return self.model(torch.round(unit * self.levels) / self.levels * (hi - lo) + lo)


class BlockDCTQuantised(nn.Module):
    """JPEG-like compression before the classifier: 8x8 blocks of each channel go through
    an orthonormal DCT, their coefficients are rounded to multiples of `step * (1 + u + v)`
    (coarser for higher frequencies, like JPEG's tables), and transformed back. Rounding
    makes the gradient zero almost everywhere (Guo et al. 2018, "Countering Adversarial
    Images using Input Transformations", https://arxiv.org/abs/1711.00117). Inputs are
    `(n, c, h, w)`; the image is padded at the bottom and right to whole blocks."""

    def __init__(self, model: nn.Module, *, step: float = 0.1, block: int = 8) -> None:
        super().__init__()
        index = torch.arange(block, dtype=torch.float32)
        basis = torch.cos(torch.pi * (2 * index[None, :] + 1) * index[:, None] / (2 * block))
        basis[0] /= torch.sqrt(torch.tensor(2.0))
        self.model, self.block = model, block
        self.basis: Tensor
        self.table: Tensor
        self.register_buffer("basis", basis * torch.sqrt(torch.tensor(2.0 / block)))
        self.register_buffer("table", step * (1 + index[:, None] + index[None, :]))

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        b = self.block
        padded = nn.functional.pad(x, (0, -w % b, 0, -h % b), mode="replicate")
        hb, wb = padded.shape[2] // b, padded.shape[3] // b
        blocks = padded.reshape(n, c, hb, b, wb, b).permute(0, 1, 2, 4, 3, 5)
        coefficients = self.basis @ blocks @ self.basis.T
        rounded = torch.round(coefficients / self.table) * self.table
        restored = (self.basis.T @ rounded @ self.basis).permute(0, 1, 2, 4, 3, 5)
        return self.model(restored.reshape(n, c, hb * b, wb * b)[:, :, :h, :w])


class ScaledLogits(nn.Module):
    """Multiplies the logits by a large constant: the same decisions, but the softmax
    saturates, so cross-entropy and its gradient are exactly zero in float32 on every
    confidently classified input (Carlini and Wagner 2017's observation about defensive
    distillation, https://arxiv.org/abs/1607.04311)."""

    def __init__(self, model: nn.Module, *, scale: float = 1000.0) -> None:
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) * self.scale


class SaturatedSoftmax(nn.Module):
    """Returns probabilities rather than logits, from a softmax at a low `temperature`:
    the outputs are one-hot in float32 on confident inputs, so every loss computed from
    them, margins included, has a zero gradient there."""

    def __init__(self, model: nn.Module, *, temperature: float = 0.01) -> None:
        super().__init__()
        self.model, self.temperature = model, temperature

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.model(x) / self.temperature, dim=1)


class NoisyInput(nn.Module):
    """Adds fresh Gaussian noise of standard deviation `std` to its input on every call (a
    randomised defence, e.g. Cohen et al. 2019's smoothing without the vote): one call's
    gradient describes one draw, so attacks need expectation over transformation. The
    noise comes from torch's global generator, as a user's model would draw it."""

    def __init__(self, model: nn.Module, *, std: float = 0.1) -> None:
        super().__init__()
        self.model, self.std = model, std

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x + self.std * torch.randn_like(x))


class SineWarp(nn.Module):
    """Adds `amplitude * sin(frequency * x)` to the input before the classifier: a change
    too small to matter to the decision, whose derivative `amplitude * frequency` dwarfs
    the identity's. The gradient exists everywhere but flips sign every `pi / frequency`,
    so it says nothing about the loss one attack step away (shattered gradients, Athalye
    et al. 2018, section 4.1)."""

    def __init__(
        self, model: nn.Module, *, amplitude: float = 0.05, frequency: float = 1000.0
    ) -> None:
        super().__init__()
        self.model, self.amplitude, self.frequency = model, amplitude, frequency

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x + self.amplitude * torch.sin(self.frequency * x))
