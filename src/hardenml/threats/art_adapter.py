"""Any evasion attack of the Adversarial Robustness Toolbox (ART) as a hardenml threat.

Nicolae et al. 2018, "Adversarial Robustness Toolbox v1.0.0",
https://arxiv.org/abs/1807.01069; attacks listed at
https://adversarial-robustness-toolbox.readthedocs.io/en/latest/modules/attacks/evasion.html.
ART is optional and imported only when the threat runs: `pip install hardenml[art]`.

A target with input gradients is wrapped as an ART `PyTorchClassifier` over the
target's own checked forward pass (so queries are counted), any other target as a
`BlackBoxClassifier` reading softmax scores. The budget goes to the attack's `eps` (and a
quarter of it to `eps_step`) and the threat's norm to its `norm`, where the attack takes
them and `art_params` does not set them; the entry point projects the result onto the
budget ball either way (so an unbounded attack such as Carlini-Wagner is judged at the
budget).

Arguments (keyword-only). The names carry `art_` because the threat's own config already
has an `attack` key (the registered name, "art"):
    art_attack: class name of an evasion attack in `art.attacks.evasion` (default
        "FastGradientMethod"), e.g. "ProjectedGradientDescent", "CarliniL2Method",
        "HopSkipJump".
    art_params: keyword arguments for that class (default none), checked against its
        constructor; `verbose` defaults to False.
    norm: "linf" (default) or "l2": the ball the result is projected onto, and the
        attack's `norm` unless `art_params` sets it.
Seeded: ART draws from NumPy's and torch's global generators, so the threat seeds both
from the generator for the attack's duration and restores their state afterwards. The
few ART attacks that make their own unseeded generator (HopSkipJump's
`np.random.RandomState()`) do not repeat; use hardenml's `hopskipjump` for those.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from types import ModuleType
from typing import Any, ClassVar, cast

import numpy as np
import torch
from torch import Tensor, nn

from hardenml.targets import Target
from hardenml.threats.base import Norm, Threat, ThreatError
from hardenml.threats.parameters import ThreatParameterError, parameter_problems

_INSTALL = "pip install hardenml[art]"
# What the adapter passes itself: the estimator (ART names it either way).
_SUPPLIED = ("estimator", "classifier")


def _evasion() -> ModuleType:
    try:
        from art.attacks import evasion
    except ImportError as exc:
        raise ThreatError(
            f"the 'art' threat needs the Adversarial Robustness Toolbox: {_INSTALL} ({exc})"
        ) from None
    return evasion


def art_attack_class(name: str) -> type:
    """The evasion attack called `name` in `art.attacks.evasion`, or a
    `ThreatParameterError` listing the ones there are."""
    evasion = _evasion()
    from art.attacks import EvasionAttack

    def is_attack(value: Any) -> bool:
        return isinstance(value, type) and issubclass(value, EvasionAttack)

    cls = getattr(evasion, name, None) if name.isidentifier() else None
    if not is_attack(cls):
        known = sorted(n for n in dir(evasion) if is_attack(getattr(evasion, n)))
        raise ThreatParameterError(
            "art_attack", name, f"the class name of an ART evasion attack: one of {known}"
        )
    assert isinstance(cls, type)
    return cls


def check_art_params(cls: type, params: Mapping[str, Any]) -> None:
    """Refuse a parameter `cls` does not take, or one of the wrong type, naming it."""
    accepted = [p for p in inspect.signature(cls).parameters if p not in _SUPPLIED]
    for key, value in params.items():
        if key in _SUPPLIED or key not in accepted:
            raise ThreatParameterError(
                f"art_params.{key}",
                value,
                f"a parameter of ART's {cls.__name__}: one of {accepted}"
                + (" (the adapter supplies the estimator)" if key in _SUPPLIED else ""),
            )
    for key, expected in parameter_problems(cast(Any, cls).__init__, params).items():
        raise ThreatParameterError(f"art_params.{key}", params[key], expected)


class _TargetModule(nn.Module):
    """The target's checked, query-counting forward as a module ART can differentiate."""

    def __init__(self, target: Target) -> None:
        super().__init__()
        self.target = target

    def forward(self, x: Tensor) -> Tensor:
        return self.target.logits(x.to(self.target.device, self.target.input_spec.dtype))


class ARTEvasion(Threat):
    norm: ClassVar[Norm] = "linf"
    needs_gradients: ClassVar[bool] = False

    def __init__(
        self,
        *,
        art_attack: str = "FastGradientMethod",
        art_params: Mapping[str, Any] | None = None,
        norm: Norm = "linf",
    ) -> None:
        if norm not in ("linf", "l2"):
            raise ThreatParameterError("norm", norm, "'linf' or 'l2'")
        # Checked now, so that a misspelt class or parameter is a config error before any
        # scan, not a failure in the middle of one.
        check_art_params(art_attack_class(art_attack), art_params or {})
        self.art_attack = art_attack
        self.art_params = dict(art_params or {})
        # The norm is a parameter here, so it shadows the class-level default.
        self.norm = norm  # type: ignore[misc]

    def run(
        self, target: Target, x: Tensor, y: Tensor, budget: float, generator: torch.Generator
    ) -> Tensor:
        cls = art_attack_class(self.art_attack)
        from art.estimators.classification import BlackBoxClassifier, PyTorchClassifier
        from art.exceptions import EstimatorError

        lo, hi = target.input_spec.bounds
        shape, k = target.input_spec.shape, len(target.classes)
        estimator: Any
        if target.has_gradients:
            estimator = PyTorchClassifier(
                model=_TargetModule(target),
                loss=nn.CrossEntropyLoss(),
                input_shape=shape,
                nb_classes=k,
                clip_values=(lo, hi),
                device_type="gpu" if target.device.type == "cuda" else "cpu",
            )
        else:
            estimator = BlackBoxClassifier(
                lambda a: _probabilities(target, a), shape, k, clip_values=(lo, hi)
            )
        accepted = inspect.signature(cls).parameters
        kwargs = dict(self.art_params)
        defaults = {
            "eps": budget,
            # ART's own default (0.1 whatever eps is) overshoots small budgets every step.
            "eps_step": budget / 4,
            "norm": np.inf if self.norm == "linf" else 2,
            "verbose": False,
        }
        for key, value in defaults.items():
            if key in accepted:
                kwargs.setdefault(key, value)
        try:
            attack = cls(estimator, **kwargs)
        except EstimatorError as exc:
            raise ThreatError(
                f"ART's {self.art_attack} cannot run on this target ({exc}); attacks that "
                "need gradients require a target with input gradients"
            ) from None
        except (TypeError, ValueError) as exc:
            raise ThreatError(
                f"ART's {self.art_attack} rejected art_params {self.art_params} (with "
                f"eps/norm set by the threat: {kwargs}): {exc}"
            ) from None
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        labels = np.eye(k, dtype=np.float32)[y.cpu().numpy()]
        state = np.random.get_state()
        devices = [target.device] if target.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                np.random.seed(seed)
                torch.manual_seed(seed)
                out = attack.generate(x=x.detach().cpu().numpy(), y=labels)
        finally:
            np.random.set_state(state)
        return torch.as_tensor(np.asarray(out), dtype=x.dtype, device=x.device)


def _probabilities(target: Target, batch: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        x = torch.as_tensor(batch, dtype=target.input_spec.dtype, device=target.device)
        logits = target.logits(x)
    return torch.softmax(logits.double(), dim=1).cpu().numpy()
