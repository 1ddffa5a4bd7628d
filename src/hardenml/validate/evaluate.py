"""Per-sample outcomes of one model on the evaluation data, for paired comparisons.

Both models see the same samples in the same order, and each threat runs with the same
seed per (threat, budget, batch) from `derive_seed` for both, so the baseline and the
candidate face the same random starts: the outcomes are paired sample by sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from hardenml._progress import Progress, SilentProgress
from hardenml.config import HardenConfig
from hardenml.data import Dataset
from hardenml.scan.behaviour import SuiteResult, run_suites
from hardenml.stats import derive_seed
from hardenml.targets import Target
from hardenml.threats import Threat


@dataclass
class Outcomes:
    """`clean[i]`/`robust[key][i]`: sample i classified right (under attack); `probs`:
    (n, classes) clean probabilities. Robust keys are `threat@budget`. `behaviour`: one
    result per declared behavioural suite, in config order."""

    clean: np.ndarray
    probs: np.ndarray
    robust: dict[str, np.ndarray]
    behaviour: list[SuiteResult] = field(default_factory=list)


def robust_key(threat: str, budget: float) -> str:
    return f"{threat}@{budget:g}"


def evaluate(
    config: HardenConfig,
    target: Target,
    data: Dataset,
    threats: dict[str, Threat],
    *,
    seed: int,
    progress: Progress | None = None,
    label: str = "",
) -> Outcomes:
    """Clean correctness and probabilities, robust correctness for every threat and
    budget that `policy.robust` names, and every behavioural suite (same seed, same draws
    for both models)."""
    progress = progress or SilentProgress()
    x = torch.from_numpy(data.x)
    y = torch.from_numpy(data.y)
    n = len(data)
    probs = []
    with torch.no_grad():
        for start in range(0, n, 512):
            logits = target.logits(x[start : start + 512].to(target.device))
            probs.append(logits.double().softmax(dim=1).cpu())
    prob = torch.cat(probs).numpy() if probs else np.zeros((0, len(target.classes)))
    robust: dict[str, np.ndarray] = {}
    batch_sizes = {t.name: t.batch_size for t in config.threats}
    for req in config.policy.robust:
        key = robust_key(req.threat, req.budget)
        if key in robust:
            continue
        size = batch_sizes[req.threat]
        advance = progress.task(f"{label}{req.threat} @ {req.budget:g}", n)
        parts = []
        for b, start in enumerate(range(0, n, size)):
            part = slice(start, min(start + size, n))
            gen = torch.Generator().manual_seed(derive_seed(seed, req.threat, req.budget, b))
            result = threats[req.threat](target, x[part], y[part], budget=req.budget, generator=gen)
            parts.append(result.robust_correct.numpy())
            advance(part.stop - part.start)
        robust[key] = np.concatenate(parts) if parts else np.zeros(0, dtype=bool)
    behaviour = run_suites(
        config,
        target,
        data.x,
        data.y,
        feature_names=data.provenance.get("feature_names"),
        seed=seed,
    )
    return Outcomes(
        clean=prob.argmax(axis=1) == data.y, probs=prob, robust=robust, behaviour=behaviour
    )
