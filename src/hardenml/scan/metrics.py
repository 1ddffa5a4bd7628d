"""Measurements and their confidence intervals."""

from __future__ import annotations

from hardenml.records import Measurement
from hardenml.stats import derive_seed, wilson_interval

__all__ = [
    "BOOTSTRAP",
    "WILSON",
    "Measurement",
    "derive_seed",
    "interval_method",
    "proportion",
    "wilson_interval",
]

WILSON = "Wilson score"
BOOTSTRAP = "seeded percentile bootstrap"
# Metrics whose interval is a bootstrap over samples (scan/calibration.py, scan/analysis.py);
# every other measurement the scan records is a proportion, built by `proportion`.
_BOOTSTRAPPED = ("ece", "brier", "margin_median", "margin_p10")


def interval_method(metric: str) -> str:
    """How a measurement's interval was computed, for the reports that print it: Wilson
    score for a proportion (clean and robust accuracy, a suite's pass rate), a seeded
    percentile bootstrap for ECE, Brier and the margin quantiles."""
    return BOOTSTRAP if metric in _BOOTSTRAPPED else WILSON


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
