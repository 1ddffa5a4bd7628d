"""Any evasion attack of the Adversarial Robustness Toolbox (ART) as a hardenml threat.

Nicolae et al. 2018, "Adversarial Robustness Toolbox v1.0.0",
https://arxiv.org/abs/1807.01069; attacks listed at
https://adversarial-robustness-toolbox.readthedocs.io/en/latest/modules/attacks/evasion.html.
ART is optional and imported only when the threat runs: `pip install hardenml[art]`.

A target with input gradients is wrapped as an ART `PyTorchClassifier` over the
target's own checked forward pass (so queries are counted), any other target as a
`BlackBoxClassifier` reading softmax scores. The budget goes to the attack's `eps` and
the threat's norm to its `norm`, where the attack takes them and `params` does not set
them; the entry point projects the result onto the budget ball either way.

Arguments (keyword-only):
    attack: class name in `art.attacks.evasion` (default "FastGradientMethod").
    params: keyword arguments for that class (default none); `verbose` defaults to False.
    norm: "linf" (default) or "l2".
Seeded: ART draws from NumPy's and torch's global generators, so the threat seeds both
from the generator for the attack's duration and restores their state afterwards. The
few ART attacks that make their own unseeded generator (HopSkipJump's
`np.random.RandomState()`) do not repeat; use hardenml's `hopskipjump` for those.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from hardenml.targets import Target
from hardenml.threats.base import Norm, Threat, ThreatError

_INSTALL = "pip install hardenml[art]"


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
        attack: str = "FastGradientMethod",
        params: Mapping[str, Any] | None = None,
        norm: Norm = "linf",
    ) -> None:
        if norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
        self.attack = attack
        self.params = params
        # The norm is a parameter here, so it shadows the class-level default.
        self.norm = norm  # type: ignore[misc]

    def run(
        self, target: Target, x: Tensor, y: Tensor, budget: float, generator: torch.Generator
    ) -> Tensor:
        try:
            from art.attacks import EvasionAttack, evasion
            from art.estimators.classification import BlackBoxClassifier, PyTorchClassifier
            from art.exceptions import EstimatorError
        except ImportError as exc:
            raise ThreatError(
                f"the 'art' threat needs the Adversarial Robustness Toolbox: {_INSTALL} ({exc})"
            ) from None
        cls = getattr(evasion, self.attack, None)
        if not (isinstance(cls, type) and issubclass(cls, EvasionAttack)):
            raise ThreatError(f"ART has no evasion attack named {self.attack!r}")
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
        kwargs = dict(self.params or {})
        defaults = {
            "eps": budget,
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
                f"ART's {self.attack} cannot run on this target ({exc}); attacks that need "
                "gradients require a target with input gradients"
            ) from None
        except TypeError as exc:
            raise ThreatError(f"ART's {self.attack} rejected params {kwargs}: {exc}") from None
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
