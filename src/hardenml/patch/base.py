"""The patch contract: `(target, model config, training data, seed) -> PatchResult`.

`Patch.__call__` is the fixed entry point. It checks that the patch supports the model's
kind, carves a seeded holdout out of the training data (for early stopping, fitting a
temperature or a threshold; never the evaluation data) and calls the patch's `run`.
Subclasses only write `run`, which returns a new `Target`; the model's kind writes that
target as the artifact (`TargetKind.save`: safetensors weights for the module `factory`
builds, a TorchScript file, a skops estimator). A patch that would leave the model as it
was raises `PatchUnchanged`, so nothing is written or recorded.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from hardenml._progress import Progress, SilentProgress
from hardenml.config import HardenConfig, ModelConfig
from hardenml.data import Dataset, split
from hardenml.stats import derive_seed
from hardenml.targets import InputSpec, SklearnTarget, Target, TorchTarget
from hardenml.targets.loading import import_factory
from hardenml.targets.torch_target import Normalize
from hardenml.threats import AttackResult, Threat


class PatchError(Exception):
    """A patch cannot be applied as asked; the message says why and what to do."""


class PatchUnchanged(PatchError):
    """The patch ran but would hand back the parent model (no training epoch improved on it,
    no adversarial example was found): there is nothing new to write, validate or record.
    A `PatchError`, so the command exits 2: the patch's settings need changing. `history`
    and `events` are what the run measured and saw, as a `PatchResult` would carry them."""

    def __init__(
        self,
        message: str,
        *,
        history: list[dict[str, Any]] | None = None,
        events: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.history = history or []
        self.events = events or []


@dataclass(frozen=True)
class TrainingAttack:
    """A declared threat at a budget the policy requires robustness at: what a patch that
    trains against the threat model (adversarial augmentation) attacks its model with."""

    name: str
    threat: Threat
    budget: float

    def run(
        self, target: Target, x: np.ndarray, y: np.ndarray, generator: torch.Generator
    ) -> AttackResult:
        """The threat at this budget on rows `x` (shape `(n, *input_spec.shape)`), labels `y`."""
        return self.threat(
            target,
            torch.from_numpy(x),
            torch.from_numpy(y),
            budget=self.budget,
            generator=generator,
        )


def policy_attacks(config: HardenConfig, threats: dict[str, Threat]) -> list[TrainingAttack]:
    """One `TrainingAttack` per `[[policy.robust]]` requirement (threat and budget), built
    with the config's own threat parameters (`threats` from `validate_threats`). Held-out
    threats (`held_out = true`) are left out: no patch ever trains on them."""
    held_out = set(config.held_out_threats)
    pairs = dict.fromkeys(
        (req.threat, req.budget) for req in config.policy.robust if req.threat not in held_out
    )
    return [TrainingAttack(name, threats[name], budget) for name, budget in pairs]


@dataclass
class PatchContext:
    """What `run` gets: the parent model and the data split for fitting and holdout."""

    target: Target
    model: ModelConfig
    fit: Dataset
    holdout: Dataset
    seed: int
    progress: Progress
    attacks: tuple[TrainingAttack, ...] = ()
    # Threats marked `held_out`: left out of `attacks`, and never to be trained on.
    held_out: tuple[str, ...] = ()

    def seed_for(self, *parts: object) -> int:
        """A seed for one use, independent of the others, derived from the patch's seed."""
        return derive_seed(self.seed, *parts)

    def generator(self, *parts: object) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed_for(*parts))


@dataclass
class PatchResult:
    """The patched model and the record of how it was made.

    The model's kind writes `target` as the artifact (`TargetKind.save`). A pytorch
    model's weights load into the module `factory(**factory_kwargs)` builds (None: the
    parent's factory); other kinds need no factory. `metrics`, `history` and `events` go
    into the lineage event unchanged, so they must be JSON-serialisable.
    """

    target: Target
    factory: str | None = None
    factory_kwargs: dict[str, Any] = field(default_factory=dict)
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
        attacks: Sequence[TrainingAttack] = (),
        held_out: Sequence[str] = (),
    ) -> PatchResult:
        """Patch `target` (loaded as `model` says) using `train`; `attacks` are the threat
        model's threats at the policy's budgets, for patches that train against them;
        `held_out` names the threats none of them may train on."""
        name = type(self).__name__
        if model.kind not in self.kinds:
            raise PatchError(
                f"{name} patches {' and '.join(self.kinds)} models; this one is {model.kind!r}"
            )
        if len(train) < 20:
            raise PatchError(f"{name} needs training data; got {len(train)} samples")
        n_hold = max(10, min(self.max_holdout, round(self.holdout_fraction * len(train))))
        fit, holdout = split(train, test_fraction=n_hold / len(train), seed=seed)
        trained_on = sorted({a.name for a in attacks} & set(held_out))
        if trained_on:
            raise PatchError(
                f"{name} was handed held-out threats to train on ({trained_on}); held-out "
                "threats are for checking only"
            )
        ctx = PatchContext(
            target,
            model,
            fit,
            holdout,
            seed,
            progress or SilentProgress(),
            tuple(attacks),
            tuple(held_out),
        )
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
    """The target's own module (without the normalisation the target adds) and its spec:
    an `nn.Module` (pytorch) or a `torch.jit.ScriptModule` (torchscript)."""
    if not isinstance(target, TorchTarget):
        raise PatchError(f"this patch needs a PyTorch target, got {type(target).__name__}")
    return target.raw_module, target.input_spec


def copy_module(module: nn.Module) -> nn.Module:
    """A deep copy of a module, scripted or not. Without gradient tracking: a ScriptModule's
    deepcopy clones its parameters through autograd where they require gradients, and a
    cloned parameter is no leaf, which no optimiser can train."""
    with torch.no_grad():
        return copy.deepcopy(module)


def trainable_copy(module: nn.Module) -> nn.Module:
    """A deep copy whose parameters take gradients again (targets freeze them). A
    TorchScript module trains like any other: autograd runs through its compiled forward."""
    clone = copy_module(module)
    params = list(clone.parameters())
    if not params:
        raise PatchError(
            f"the model ({type(module).__name__}) has no parameters to train: a TorchScript "
            "module made with torch.jit.freeze has its weights inlined as constants; save "
            "the unfrozen scripted module instead"
        )
    for p in params:
        p.requires_grad_(True)
    return clone


def build_module(model: ModelConfig, seed: int) -> nn.Module:
    """A freshly initialised module from the model's factory, seeded."""
    if model.factory is None:
        raise PatchError(
            f"training from scratch needs model.factory to build a fresh module; a "
            f"{model.kind!r} model can only be fine-tuned (init = 'finetune')"
        )
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


def wrapped(
    ctx: PatchContext,
    wrapper: nn.Module,
    *,
    factory: str,
    settings: dict[str, Any] | None = None,
) -> tuple[nn.Module, str | None, dict[str, Any]]:
    """A wrapper around (a copy of) the parent, as the parent's kind can write it:
    (module, factory, factory_kwargs) for `PatchResult`.

    A scripted parent has no factory to rebuild it, so the wrapper is scripted too and the
    artifact is one self-contained TorchScript file. A pytorch parent's wrapper is written
    as weights, rebuilt on load by `factory(factory=<parent's factory>,
    factory_kwargs=<parent's>, **settings)`.
    """
    if isinstance(torch_parts(ctx.target)[0], torch.jit.ScriptModule):
        try:
            return torch.jit.script(wrapper), None, {}
        except (RuntimeError, torch.jit.frontend.FrontendError) as exc:  # not scriptable
            raise PatchError(
                f"cannot script the {type(wrapper).__name__} wrapper around a TorchScript "
                f"model: {str(exc).splitlines()[0]}"
            ) from None
    if ctx.model.factory is None:
        raise PatchError("wrapping a pytorch model needs model.factory")
    nested = {"factory": ctx.model.factory, "factory_kwargs": dict(ctx.model.factory_kwargs)}
    return wrapper, factory, {**nested, **(settings or {})}


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
