"""Failure rates under a common corruption, per severity, and the corruption error.

Hendrycks & Dietterich 2019, "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations", https://arxiv.org/abs/1903.12261: a corruption is applied
at severities 1..5; E_s is the error rate (1 - accuracy) at severity s; the corruption
error CE = sum_s E_s (the paper then divides by AlexNet's, which `normalized_corruption_error`
does against any baseline model) and the relative corruption error subtracts the clean
error first, sum_s (E_s - E_clean).

Per-severity rates get Wilson intervals (`hardenml.scan.metrics.wilson_interval`). The
mean over severities gets a seeded percentile bootstrap: the severities are usually
evaluated on the same samples, so their errors are correlated and no closed form fits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from hardenml.stats import wilson_interval


@dataclass(frozen=True)
class SeverityFailure:
    """Failure rate at one severity (0 is the clean data), with its Wilson interval."""

    severity: int
    failure_rate: float
    ci: tuple[float, float]
    failures: int
    n: int

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ci"] = list(self.ci)
        return out


@dataclass(frozen=True)
class CorruptionFailureRates:
    """One corruption's failure rates and its mean (relative) corruption error.

    `mean_error` is the mean of E_s over the severities (the paper's CE divided by the
    number of severities, so it reads as an error rate); `mean_relative_error` is the mean
    of E_s - E_clean. Both intervals are percentile bootstraps.
    """

    corruption: str
    clean: SeverityFailure
    severities: tuple[SeverityFailure, ...]
    mean_error: float
    mean_error_ci: tuple[float, float]
    mean_relative_error: float
    mean_relative_error_ci: tuple[float, float]
    paired: bool
    confidence: float
    seed: int
    n_boot: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "corruption": self.corruption,
            "clean": self.clean.as_dict(),
            "severities": [s.as_dict() for s in self.severities],
            "mean_error": self.mean_error,
            "mean_error_ci": list(self.mean_error_ci),
            "mean_relative_error": self.mean_relative_error,
            "mean_relative_error_ci": list(self.mean_relative_error_ci),
            "paired": self.paired,
            "confidence": self.confidence,
            "seed": self.seed,
            "n_boot": self.n_boot,
        }


def _as_correct(name: str, values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.dtype != np.bool_ or arr.size == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-D bool array of per-sample correctness, got "
            f"{arr.dtype} of shape {arr.shape}"
        )
    return arr


def _failure(severity: int, correct: np.ndarray, confidence: float) -> SeverityFailure:
    n = int(correct.size)
    failures = n - int(correct.sum())
    return SeverityFailure(
        severity=severity,
        failure_rate=failures / n,
        ci=wilson_interval(failures, n, confidence),
        failures=failures,
        n=n,
    )


def corruption_failure_rates(
    clean_correct: np.ndarray,
    severity_correct: Mapping[int, np.ndarray],
    *,
    corruption: str,
    confidence: float = 0.95,
    seed: int,
    n_boot: int = 200,
) -> CorruptionFailureRates:
    """Failure rate per severity with Wilson intervals, and the mean (relative) corruption
    error over severities with a seeded bootstrap interval (Hendrycks & Dietterich 2019,
    https://arxiv.org/abs/1903.12261).

    Args:
        clean_correct: (n,) bool, the model's correctness on the clean samples.
        severity_correct: severity (a positive int, usually 1..5) -> (n_s,) bool
            correctness on the corrupted samples.
        corruption: the corruption's name, carried into the result.
        confidence: coverage of the intervals, in (0, 1).
        seed: seeds the bootstrap; the same seed gives the same intervals.
        n_boot: bootstrap resamples.

    When every array has the same length, sample i is taken to be the same input at every
    severity and the bootstrap resamples whole rows (`paired` = True), which keeps the
    correlation between severities; otherwise each array is resampled on its own.
    """
    if not severity_correct:
        raise ValueError(f"corruption {corruption!r}: no severities were measured")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot}")
    bad = [s for s in severity_correct if not isinstance(s, int | np.integer) or s < 1]
    if bad:
        raise ValueError(f"severities must be positive integers, got {bad}")
    clean = _as_correct("clean_correct", clean_correct)
    levels = sorted(int(s) for s in severity_correct)
    arrays = [_as_correct(f"severity {s}", severity_correct[s]) for s in levels]

    per_severity = tuple(_failure(s, a, confidence) for s, a in zip(levels, arrays, strict=True))
    clean_rate = _failure(0, clean, confidence)
    mean_error = float(np.mean([s.failure_rate for s in per_severity]))

    rng = np.random.default_rng(seed)
    sizes = {a.size for a in arrays} | {clean.size}
    paired = len(sizes) == 1
    boot_mean = np.empty(n_boot)
    boot_relative = np.empty(n_boot)
    for i in range(n_boot):
        if paired:
            take = rng.integers(0, clean.size, size=clean.size)
            errors = [1.0 - a[take].mean() for a in arrays]
            clean_error = 1.0 - clean[take].mean()
        else:
            errors = [1.0 - a[rng.integers(0, a.size, size=a.size)].mean() for a in arrays]
            clean_error = 1.0 - clean[rng.integers(0, clean.size, size=clean.size)].mean()
        boot_mean[i] = np.mean(errors)
        boot_relative[i] = boot_mean[i] - clean_error
    alpha = 1.0 - confidence
    quantiles = [alpha / 2, 1.0 - alpha / 2]
    mean_lo, mean_hi = (float(v) for v in np.quantile(boot_mean, quantiles))
    rel_lo, rel_hi = (float(v) for v in np.quantile(boot_relative, quantiles))
    return CorruptionFailureRates(
        corruption=corruption,
        clean=clean_rate,
        severities=per_severity,
        mean_error=mean_error,
        mean_error_ci=(mean_lo, mean_hi),
        mean_relative_error=mean_error - clean_rate.failure_rate,
        mean_relative_error_ci=(rel_lo, rel_hi),
        paired=paired,
        confidence=confidence,
        seed=seed,
        n_boot=n_boot,
    )


def normalized_corruption_error(
    model: CorruptionFailureRates, baseline: CorruptionFailureRates
) -> tuple[float, float]:
    """(CE, relative CE) of `model` normalised by `baseline` on the same corruption.

    Hendrycks & Dietterich 2019, https://arxiv.org/abs/1903.12261, Sec. 3:
    CE = sum_s E_s^model / sum_s E_s^baseline and
    relative CE = sum_s (E_s^model - E_clean^model) / sum_s (E_s^baseline - E_clean^baseline),
    the paper using AlexNet as the baseline. Below 1 the model degrades less than the
    baseline. A ratio whose denominator is 0 is NaN.
    """
    if model.corruption != baseline.corruption:
        raise ValueError(
            f"cannot normalise {model.corruption!r} by a baseline measured on "
            f"{baseline.corruption!r}"
        )
    model_levels = [s.severity for s in model.severities]
    if model_levels != [s.severity for s in baseline.severities]:
        raise ValueError("model and baseline must be measured at the same severities")
    # Same severities on both sides, so the ratio of sums equals the ratio of means.
    den, rel_den = baseline.mean_error, baseline.mean_relative_error
    ce = model.mean_error / den if den else float("nan")
    relative = model.mean_relative_error / rel_den if rel_den else float("nan")
    return ce, relative
