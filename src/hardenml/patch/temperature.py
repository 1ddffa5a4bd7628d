"""Calibration by temperature scaling.

Guo et al. 2017, "On Calibration of Modern Neural Networks",
https://arxiv.org/abs/1706.04599, Sec. 4.2: divide the logits by one scalar `T > 0`
fitted to minimise the negative log-likelihood on held-out data. Predictions (the
argmax) do not change, so accuracy and robust accuracy stay the same; only the
confidence does.

PyTorch models get a wrapper module (`temperature_scaled`, a model factory) holding the
parent and a `temperature` buffer; TorchScript models the same wrapper, scripted; linear
scikit-learn models get their coefficients and intercepts divided by `T`, which is the
same map on their decision function.

Arguments (keyword-only):
    bins: equal-width confidence bins of the reported ECE (default 15, as Guo et al.).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from torch import Tensor, nn

from hardenml.patch.base import (
    Patch,
    PatchContext,
    PatchError,
    PatchResult,
    copy_module,
    like,
    sklearn_estimator,
    target_logits,
    torch_parts,
    wrapped,
)
from hardenml.stats import expected_calibration_error
from hardenml.targets import SklearnTarget
from hardenml.targets.loading import import_factory
from hardenml.targets.sklearn_target import linear_surrogate


def nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of softmax(logits / T)."""
    logp = log_softmax(logits / temperature, axis=1)
    return float(-logp[np.arange(len(y)), y].mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The NLL-minimising temperature, searched over log T in [-5, 5] (T in ~[0.007, 148])."""
    found = minimize_scalar(
        lambda log_t: nll(logits, y, math.exp(log_t)),
        bounds=(-5.0, 5.0),
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(math.exp(found.x))


class TemperatureScaled(nn.Module):
    """`inner(x) / temperature`; the temperature is a buffer, saved with the weights."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.temperature: Tensor
        self.register_buffer("temperature", torch.ones(()))

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x) / self.temperature


def temperature_scaled(
    factory: str, factory_kwargs: dict[str, Any] | None = None
) -> TemperatureScaled:
    """Model factory for the artifact: the parent built by `factory`, wrapped."""
    return TemperatureScaled(import_factory(factory)(**(factory_kwargs or {})))


class TemperatureScaling(Patch):
    kinds = ("pytorch", "torchscript", "sklearn")

    def __init__(self, *, bins: int = 15) -> None:
        self.bins = bins

    def run(self, ctx: PatchContext) -> PatchResult:
        logits = target_logits(ctx.target, ctx.holdout.x)
        y = ctx.holdout.y
        t = fit_temperature(logits, y)

        def calib(temp: float) -> dict[str, float]:
            probs = np.exp(log_softmax(logits / temp, axis=1))
            return {
                "nll": nll(logits, y, temp),
                "ece": expected_calibration_error(probs, y, self.bins),
            }

        metrics = {"temperature": t, "before": calib(1.0), "after": calib(t)}
        metrics["holdout_n"] = len(y)
        if ctx.model.kind == "sklearn":
            return self._sklearn(ctx, t, metrics)
        parent, _ = torch_parts(ctx.target)
        scaled = TemperatureScaled(copy_module(parent))
        scaled.temperature.fill_(t)
        module, factory, kwargs = wrapped(
            ctx, scaled, factory="hardenml.patch.temperature:temperature_scaled"
        )
        return PatchResult(
            target=like(ctx.target, module),
            factory=factory,
            factory_kwargs=kwargs,
            metrics=metrics,
        )

    def _sklearn(self, ctx: PatchContext, t: float, metrics: dict[str, Any]) -> PatchResult:
        estimator = copy.deepcopy(sklearn_estimator(ctx.target))
        if linear_surrogate(estimator) is None:
            raise PatchError(
                f"temperature scaling of a scikit-learn model needs a linear classifier "
                f"(coef_ and intercept_), got {type(estimator).__name__}"
            )
        final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
        final.coef_ = final.coef_ / t
        final.intercept_ = final.intercept_ / t
        target = SklearnTarget(
            estimator, input_spec=ctx.target.input_spec, classes=ctx.target.classes
        )
        return PatchResult(target=target, metrics=metrics)
