"""The patch contract: `(target, model config, training data, seed) -> PatchResult`.

`Patch.__call__` is the fixed entry point. It checks that the patch supports the model's
kind, carves a seeded holdout out of the training data (for early stopping, fitting a
temperature or a threshold; never the evaluation data) and calls the patch's `run`.
Subclasses only write `run`, which returns a new `Target` and what it takes to write it
as an artifact: torch weights for the model built by `factory`, or a scikit-learn
estimator.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from hardenml._progress import Progress, SilentProgress
from hardenml.config import ModelConfig
from hardenml.data import Dataset, split
from hardenml.stats import derive_seed
from hardenml.targets import InputSpec, SklearnTarget, Target, TorchTarget
from hardenml.targets.loading import import_factory
from hardenml.targets.torch_target import Normalize


class PatchError(Exception):
    """A patch cannot be applied as asked; the message says why and what to do."""


@dataclass
class PatchContext:
    """What `run` gets: the parent model and the data split for fitting and holdout."""

    target: Target
    model: ModelConfig
    fit: Dataset
    holdout: Dataset
    seed: int
    progress: Progress

    def seed_for(self, *parts: object) -> int:
        """A seed for one use, independent of the others, derived from the patch's seed."""
        return derive_seed(self.seed, *parts)

    def generator(self, *parts: object) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed_for(*parts))


@dataclass
class PatchResult:
    """The patched model and the record of how it was made.

    `weights` (PyTorch) load into the module that `factory(**factory_kwargs)` builds;
    `estimator` (scikit-learn) is written with skops. `metrics`, `history` and `events`
    go into the lineage event unchanged, so they must be JSON-serialisable.
    """

    target: Target
    factory: str | None = None
    factory_kwargs: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, Tensor] | None = None
    estimator: Any = None
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


class Patch(ABC):
    """Base of every defence. Constructors take keyword-only parameters and store them."""

    kinds: ClassVar[tuple[str, ...]] = ("pytorch",)
    # The threat families (`Threat.family`) this defence is meant to harden a model against;
    # a finding proposes the registered patches that address its threat's family and patch
    # its model's kind. Empty: not a robustness remedy (calibration, abstention).
    addresses: ClassVar[tuple[str, ...]] = ()
    # A few words on what it does, for the remediation a finding proposes.
    summary: ClassVar[str] = ""
    # Share of the training data held out from fitting, capped so holdout checks stay cheap.
    holdout_fraction: ClassVar[float] = 0.1
    max_holdout: ClassVar[int] = 1000

    def __call__(
        self,
        target: Target,
        model: ModelConfig,
        train: Dataset,
        *,
        seed: int = 0,
        progress: Progress | None = None,
    ) -> PatchResult:
        name = type(self).__name__
        if model.kind not in self.kinds:
            raise PatchError(
                f"{name} patches {' and '.join(self.kinds)} models; this one is {model.kind!r}"
            )
        if len(train) < 20:
            raise PatchError(f"{name} needs training data; got {len(train)} samples")
        n_hold = max(10, min(self.max_holdout, round(self.holdout_fraction * len(train))))
        fit, holdout = split(train, test_fraction=n_hold / len(train), seed=seed)
        ctx = PatchContext(target, model, fit, holdout, seed, progress or SilentProgress())
        return self.run(ctx)

    @abstractmethod
    def run(self, ctx: PatchContext) -> PatchResult:
        """Fit the defence on `ctx.fit` (and `ctx.holdout`); return the patched model."""

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.endswith("_")}

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({shown})"


def torch_parts(target: Target) -> tuple[nn.Module, InputSpec]:
    """The target's own module (without the normalisation the target adds) and its spec."""
    if not isinstance(target, TorchTarget):
        raise PatchError(f"this patch needs a PyTorch target, got {type(target).__name__}")
    return target.raw_module, target.input_spec


def trainable_copy(module: nn.Module) -> nn.Module:
    """A deep copy whose parameters take gradients again (targets freeze them)."""
    clone = copy.deepcopy(module)
    for p in clone.parameters():
        p.requires_grad_(True)
    return clone


def build_module(model: ModelConfig, seed: int) -> nn.Module:
    """A freshly initialised module from the model's factory, seeded."""
    if model.factory is None:
        raise PatchError("training from scratch needs model.factory")
    torch.manual_seed(seed)
    module = import_factory(model.factory)(**model.factory_kwargs)
    if not isinstance(module, nn.Module):
        raise PatchError(f"model.factory {model.factory!r} did not return an nn.Module")
    return module


def in_input_space(module: nn.Module, spec: InputSpec) -> nn.Module:
    """`module` behind the target's normalisation: it takes raw inputs, as attacks see them."""
    norm = spec.normalizer()
    return module if norm is None else nn.Sequential(Normalize(*norm), module)


def like(target: Target, module: nn.Module) -> TorchTarget:
    """A target for `module` with the same spec, classes and device as `target`."""
    return TorchTarget(
        module, input_spec=target.input_spec, classes=target.classes, device=target.device
    )


def sklearn_estimator(target: Target) -> Any:
    if not isinstance(target, SklearnTarget):
        raise PatchError(f"this patch needs a scikit-learn target, got {type(target).__name__}")
    return target.estimator


@torch.no_grad()
def target_logits(target: Target, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits for a whole array, batched, as float64 numpy."""
    parts = [
        target.logits(torch.from_numpy(x[i : i + batch_size]).to(target.device)).double().cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(parts).numpy()


def weights_of(module: nn.Module) -> dict[str, Tensor]:
    """A state dict ready for safetensors: contiguous CPU tensors, no shared storage."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def nested_factory(model: ModelConfig) -> dict[str, Any]:
    """factory_kwargs for a wrapper module that rebuilds the parent inside itself."""
    if model.factory is None:
        raise PatchError("wrapping a model needs model.factory (a pytorch model)")
    return {"factory": model.factory, "factory_kwargs": dict(model.factory_kwargs)}
