"""A scikit-learn classifier as a `Target`.

Linear models (LogisticRegression, LinearSVC, SGDClassifier, RidgeClassifier), alone
or after StandardScaler/MinMaxScaler in a Pipeline, get an exact differentiable torch
copy of their decision function, so white-box gradient attacks run on them. Any other
estimator is a black box queried through `predict_proba`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from hardenml.config import ModelConfig
from hardenml.targets.base import InputSpec, Target, TargetError
from hardenml.targets.kinds import TargetKind
from hardenml.targets.loading import input_spec_from_config, load_sklearn


class _Affine(nn.Module):
    """x -> x @ W.T + b, the exact decision function of a (scaled) linear model."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        super().__init__()
        self.weight: Tensor
        self.bias: Tensor
        self.register_buffer("weight", torch.as_tensor(weight, dtype=torch.float64))
        self.register_buffer("bias", torch.as_tensor(bias, dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        return x.to(torch.float64) @ self.weight.T + self.bias


def linear_surrogate(estimator: Any) -> nn.Module | None:
    """An exact torch copy of a linear estimator's logits, or None if it is not linear."""
    steps = list(estimator.steps) if hasattr(estimator, "steps") else [(None, estimator)]
    *pre, (_, clf) = steps
    coef = getattr(clf, "coef_", None)
    intercept = getattr(clf, "intercept_", None)
    if coef is None or intercept is None or not hasattr(clf, "decision_function"):
        return None
    w = np.atleast_2d(np.asarray(coef, dtype=np.float64))
    b = np.atleast_1d(np.asarray(intercept, dtype=np.float64)).astype(np.float64)
    # Fold the preprocessing into the affine map, last step first.
    for _, step in reversed(pre):
        name = type(step).__name__
        if name == "StandardScaler":
            scale = np.asarray(step.scale_ if step.scale_ is not None else 1.0)
            mean = np.asarray(step.mean_ if step.mean_ is not None else 0.0)
            w, b = w / scale, b - (w / scale) @ np.broadcast_to(mean, w.shape[1:])
        elif name == "MinMaxScaler":
            w, b = w * step.scale_, b + w @ step.min_
        else:
            return None
    if w.shape[0] == 1:
        # Binary: the decision value z is the logit of class 1; [0, z] softmaxes to sigmoid.
        w = np.vstack([np.zeros_like(w), w])
        b = np.concatenate([[0.0], b])
    return _Affine(w, b)


def estimator_logits(estimator: Any, data: Any) -> np.ndarray:
    """Per-class scores `(n, k)` of an estimator on `data`: log `predict_proba` (which
    softmax maps back to the probabilities), else `decision_function`, a binary model's
    single column z as [0, z]."""
    if hasattr(estimator, "predict_proba"):
        proba = np.asarray(estimator.predict_proba(data), dtype=np.float64)
        return np.log(np.clip(proba, 1e-12, 1.0))
    out = np.asarray(estimator.decision_function(data), dtype=np.float64)
    return np.stack([np.zeros_like(out), out], axis=1) if out.ndim == 1 else out


class SklearnTarget(Target):
    def __init__(
        self,
        estimator: Any,
        *,
        input_spec: InputSpec,
        classes: Sequence[str],
    ) -> None:
        if not hasattr(estimator, "predict_proba") and not hasattr(estimator, "decision_function"):
            raise TargetError(
                f"{type(estimator).__name__} has neither predict_proba nor decision_function; "
                "hardenml needs per-class scores"
            )
        self.estimator = estimator
        self.surrogate = linear_surrogate(estimator)
        super().__init__(
            input_spec=input_spec,
            classes=classes,
            has_gradients=self.surrogate is not None,
            device=torch.device("cpu"),
        )

    def _forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(x.shape[0], -1)
        if self.surrogate is not None:
            return self.surrogate(flat).to(self.input_spec.dtype)
        data = flat.detach().cpu().numpy().astype(np.float64)
        return torch.as_tensor(estimator_logits(self.estimator, data), dtype=self.input_spec.dtype)


class SklearnKind(TargetKind):
    """`model.kind = "sklearn"`: an estimator saved with skops (pickle only when trusted)."""

    suffixes = (".skops", ".pkl", ".pickle", ".joblib")
    description = "a scikit-learn estimator saved with skops (pickle/joblib with --trust)"
    artifact_suffix = ".skops"

    def save(self, target: Target, path: Path) -> None:
        """The estimator with skops: loading it runs no code (never pickle)."""
        import skops.io as sio

        if not isinstance(target, SklearnTarget):
            raise TargetError(
                f"an sklearn model file holds an estimator, not a {type(target).__name__}"
            )
        sio.dump(target.estimator, path)

    def load(self, model: ModelConfig, path: Path | None, options: Any, *, trust: bool) -> Target:
        assert path is not None  # needs_file
        return SklearnTarget(
            load_sklearn(path, trust=trust or model.trust, trusted_types=model.trusted_types),
            input_spec=input_spec_from_config(model),
            classes=model.classes,
        )
