"""A PyTorch `nn.Module` (or TorchScript module) as a `Target`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from hardenml.targets.base import InputSpec, Target


class Normalize(nn.Module):
    """(x - mean) / std with broadcastable buffers: the model's own input normalisation."""

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def pick_device(name: str = "auto") -> torch.device:
    """`auto` uses a GPU when one is there, the CPU otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class TorchTarget(Target):
    """Wraps a module in eval mode; normalisation from `input_spec` is applied inside."""

    def __init__(
        self,
        module: nn.Module,
        *,
        input_spec: InputSpec,
        classes: Sequence[str],
        device: torch.device | str = "auto",
    ) -> None:
        dev = pick_device(device) if isinstance(device, str) else device
        super().__init__(input_spec=input_spec, classes=classes, has_gradients=True, device=dev)
        norm = input_spec.normalizer()
        wrapped = module if norm is None else nn.Sequential(Normalize(*norm), module)
        self.module = wrapped.to(dev).eval()
        self.raw_module = module
        # Attacks need input gradients only; parameter gradients would waste memory.
        for p in self.module.parameters():
            p.requires_grad_(False)

    def _forward(self, x: Tensor) -> Tensor:
        return self.module(x.to(self.device, self.input_spec.dtype))
