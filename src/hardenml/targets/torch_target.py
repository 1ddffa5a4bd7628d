"""A PyTorch `nn.Module` (or TorchScript module) as a `Target`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hardenml.config import ModelConfig
from hardenml.targets.base import InputSpec, Target, TargetError
from hardenml.targets.kinds import TargetKind
from hardenml.targets.loading import input_spec_from_config, load_torch_module


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


def prefers_channels_last(module: nn.Module, input_spec: InputSpec, device: torch.device) -> bool:
    """Whether to run `module` in channels-last layout: a CNN on image input, on the CPU.

    oneDNN's convolutions work natively in that layout: a forward and backward pass of the
    MNIST CNN takes 0.85-0.9 of the time in it (bench/attacks.py measures it). A fixed rule
    rather than a timing race, so that a model always runs the same kernels and the same
    seed gives the same numbers. Not applied on GPUs, where it was not measured, nor to
    TorchScript modules, whose layout is compiled in.
    """
    return (
        device.type == "cpu"
        and len(input_spec.shape) == 3
        and not isinstance(module, torch.jit.ScriptModule)
        and any(isinstance(m, nn.Conv2d) for m in module.modules())
    )


class TorchTarget(Target):
    """Wraps a module in eval mode; normalisation from `input_spec` is applied inside.

    Like the move to `device`, the layout change (`channels_last`, default: the rule of
    `prefers_channels_last`) happens in place on the module's parameters; the numbers are
    the same up to float rounding, and saved weights are made contiguous.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        input_spec: InputSpec,
        classes: Sequence[str],
        device: torch.device | str = "auto",
        channels_last: bool | None = None,
    ) -> None:
        dev = pick_device(device) if isinstance(device, str) else device
        super().__init__(input_spec=input_spec, classes=classes, has_gradients=True, device=dev)
        norm = input_spec.normalizer()
        wrapped = module if norm is None else nn.Sequential(Normalize(*norm), module)
        if channels_last is None:
            channels_last = prefers_channels_last(module, input_spec, dev)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        wrapped = wrapped.to(dev)
        if channels_last:
            # `Module.to` takes memory_format at run time; its type stubs do not list it.
            wrapped = wrapped.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.module = wrapped.eval()
        self.raw_module = module
        # Attacks need input gradients only; parameter gradients would waste memory.
        for p in self.module.parameters():
            p.requires_grad_(False)

    def _forward(self, x: Tensor) -> Tensor:
        x = x.to(self.device, self.input_spec.dtype)
        if self.memory_format is torch.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.module(x)


def _module_of(target: Target, kind: str) -> nn.Module:
    if not isinstance(target, TorchTarget):
        raise TargetError(
            f"a {kind} model file holds a torch module, not a {type(target).__name__}"
        )
    return target.raw_module


class PyTorchKind(TargetKind):
    """`model.kind = "pytorch"`: `model.factory` builds the module, weights from safetensors."""

    suffixes = (".safetensors", ".pt", ".pth")
    needs_factory = True
    description = "an nn.Module built by model.factory with .safetensors weights (.pt with --trust)"
    artifact_suffix = ".safetensors"

    def save(self, target: Target, path: Path) -> None:
        """The module's state dict as safetensors; `load` needs the factory that builds a
        module with these keys (a patch's lineage records it)."""
        from safetensors.torch import save_file

        state = _module_of(target, "pytorch").state_dict()
        # Contiguous CPU copies: safetensors refuses shared storage and strided views
        # (channels-last convolutions are strided).
        weights = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
        save_file(weights, str(path), metadata={"producer": "hardenml"})

    def load(self, model: ModelConfig, path: Path | None, options: Any, *, trust: bool) -> Target:
        assert path is not None  # needs_file
        return TorchTarget(
            load_torch_module(model, path, trust=trust or model.trust),
            input_spec=input_spec_from_config(model),
            classes=model.classes,
            device=pick_device(model.device),
        )


class TorchScriptKind(TargetKind):
    """`model.kind = "torchscript"`: a `torch.jit.save` file (no Python code runs on load)."""

    description = "a TorchScript file (torch.jit.save)"
    artifact_suffix = ".pt"

    def save(self, target: Target, path: Path) -> None:
        """`torch.jit.save` of the target's scripted module: code and weights in one file."""
        module = _module_of(target, "torchscript")
        if not isinstance(module, torch.jit.ScriptModule):
            raise TargetError(
                f"a torchscript model file holds a scripted module, not a {type(module).__name__}"
                " (script it with torch.jit.script first)"
            )
        torch.jit.save(module, str(path))

    def load(self, model: ModelConfig, path: Path | None, options: Any, *, trust: bool) -> Target:
        assert path is not None  # needs_file
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as exc:
            raise TargetError(f"{path} is not a TorchScript file: {exc}") from None
        return TorchTarget(
            module,
            input_spec=input_spec_from_config(model),
            classes=model.classes,
            device=pick_device(model.device),
        )
