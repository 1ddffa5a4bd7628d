"""Measurements and their confidence intervals."""

from __future__ import annotations

from hardenml.records import Measurement
from hardenml.stats import derive_seed, wilson_interval

__all__ = ["Measurement", "derive_seed", "proportion", "wilson_interval"]


def proportion(
    metric: str,
    hits: int,
    n: int,
    *,
    threat: str | None = None,
    budget: float | None = None,
    confidence: float,
    seed: int,
) -> Measurement:
    lo, hi = wilson_interval(hits, n, confidence)
    return Measurement(
        metric, threat, budget, hits / n if n else float("nan"), lo, hi, confidence, n, seed
    )
