"""Abstention: answer only when confident enough, at a chosen coverage.

Geifman & El-Yaniv 2017, "Selective Classification for Deep Neural Networks",
https://arxiv.org/abs/1705.08500: a softmax-response selector rejects inputs whose top
class probability is below a threshold; the threshold is chosen on held-out data so
that the model answers a target share of inputs (its coverage), and the error among the
answered ones (the selective risk) is reported against the coverage it costs.

The artifact wraps the parent (`abstaining`, a model factory; scripted for a TorchScript
parent) with the threshold as a buffer. Its logits are the parent's, so scans and attacks
see the same model; `Abstaining.select(x)` returns the predictions and which of them to
trust (exported, so a TorchScript artifact has it too).

Arguments (keyword-only):
    coverage: the share of inputs the model should answer (default 0.9).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.special import softmax
from torch import Tensor, nn

from hardenml.patch.base import (
    Patch,
    PatchContext,
    PatchError,
    PatchResult,
    copy_module,
    like,
    target_logits,
    torch_parts,
    wrapped,
)
from hardenml.targets.loading import import_factory

COVERAGE_GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


def threshold_for_coverage(confidence: np.ndarray, coverage: float) -> float:
    """The largest threshold that keeps at least `coverage` of the samples (conf >= t)."""
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    ranked = np.sort(confidence)[::-1]
    keep = max(1, math.ceil(coverage * len(ranked) - 1e-9))
    return float(ranked[keep - 1])


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> dict[str, Any]:
    """Selective risk at each coverage of `COVERAGE_GRID`, and the area under the full
    risk-coverage curve (AURC, lower is better)."""
    order = np.argsort(-confidence, kind="stable")
    errors = np.cumsum(~correct[order])
    answered = np.arange(1, len(order) + 1)
    curve = errors / answered
    points = []
    for c in COVERAGE_GRID:
        k = max(1, math.ceil(c * len(order) - 1e-9))
        points.append({"coverage": c, "selective_risk": float(curve[k - 1])})
    return {"curve": points, "aurc": float(curve.mean())}


class Abstaining(nn.Module):
    """The parent's logits, plus a softmax-response threshold to abstain below."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.threshold: Tensor
        self.register_buffer("threshold", torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x)

    @torch.jit.export
    def select(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(predicted class, answered?) per input; act only where answered is True."""
        with torch.no_grad():
            probs = self.inner(x).softmax(dim=1)
            conf, pred = probs.max(dim=1)
        return pred, conf >= self.threshold


def abstaining(factory: str, factory_kwargs: dict[str, Any] | None = None) -> Abstaining:
    """Model factory for the artifact: the parent built by `factory`, wrapped."""
    return Abstaining(import_factory(factory)(**(factory_kwargs or {})))


class Abstention(Patch):
    kinds = ("pytorch", "torchscript")

    def __init__(self, *, coverage: float = 0.9) -> None:
        self.coverage = coverage

    def run(self, ctx: PatchContext) -> PatchResult:
        if not 0.0 < self.coverage <= 1.0:
            raise PatchError(f"abstain: coverage must be in (0, 1], got {self.coverage}")
        parent, _ = torch_parts(ctx.target)
        probs = softmax(target_logits(ctx.target, ctx.holdout.x), axis=1)
        confidence = probs.max(axis=1)
        correct = probs.argmax(axis=1) == ctx.holdout.y
        threshold = threshold_for_coverage(confidence, self.coverage)
        answered = confidence >= threshold
        selector = Abstaining(copy_module(parent))
        selector.threshold.fill_(threshold)
        metrics = {
            "holdout_n": len(correct),
            "target_coverage": self.coverage,
            "threshold": threshold,
            "coverage": float(answered.mean()),
            "risk": float(1 - correct.mean()),
            "selective_risk": float(1 - correct[answered].mean()),
            "risk_coverage": risk_coverage(confidence, correct),
        }
        module, factory, kwargs = wrapped(
            ctx, selector, factory="hardenml.patch.abstain:abstaining"
        )
        return PatchResult(
            target=like(ctx.target, module), factory=factory, factory_kwargs=kwargs, metrics=metrics
        )
