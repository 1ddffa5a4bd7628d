"""Calibration of a classifier's probabilities: ECE, Brier score, reliability diagram.

Guo et al. 2017, "On Calibration of Modern Neural Networks",
https://arxiv.org/abs/1706.04599: equal-width bins over the top-class probability
(15 by default, as in the paper); the expected calibration error (ECE) is the
count-weighted mean of |accuracy - confidence| over the bins. Brier 1950,
"Verification of forecasts expressed in terms of probability",
https://doi.org/10.1175/1520-0493(1950)078<0001:VOFEIT>2.0.CO;2: the mean over samples of
the squared distance between the probability vector and the one-hot label.

Intervals are seeded percentile bootstraps over samples (Efron & Tibshirani 1993), since
neither ECE nor the multi-class Brier score has a closed-form interval that fits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from hardenml.stats import (
    bin_index,
    binned_ece,
    brier_per_sample,
    brier_score,
    checked_probabilities,
    expected_calibration_error,
)

__all__ = [
    "CalibrationSummary",
    "ReliabilityBin",
    "brier_score",
    "calibration_summary",
    "expected_calibration_error",
    "reliability_diagram",
]


@dataclass(frozen=True)
class ReliabilityBin:
    """Samples whose top-class probability fell in [lo, hi): their mean confidence and
    accuracy. The last bin is closed, so a confidence of exactly 1.0 lands in it."""

    lo: float
    hi: float
    confidence: float
    accuracy: float
    count: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CalibrationSummary:
    """ECE and Brier score with bootstrap intervals, the reliability bins, and how confident
    the model is on the samples it gets wrong.

    `wrong_confidence_mean` / `wrong_confidence_median` are the mean and median top-class
    probability over misclassified samples; None when no sample is misclassified.
    """

    n: int
    n_bins: int
    accuracy: float
    mean_confidence: float
    ece: float
    ece_ci: tuple[float, float]
    brier: float
    brier_ci: tuple[float, float]
    bins: tuple[ReliabilityBin, ...]
    n_wrong: int
    wrong_confidence_mean: float | None
    wrong_confidence_median: float | None
    confidence: float
    seed: int
    n_boot: int

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ece_ci"] = list(self.ece_ci)
        out["brier_ci"] = list(self.brier_ci)
        out["bins"] = [b.as_dict() for b in self.bins]
        return out


def reliability_diagram(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> list[ReliabilityBin]:
    """Equal-width bins over the top-class probability (Guo et al. 2017, Sec. 2,
    https://arxiv.org/abs/1706.04599).

    Args:
        probs: (n, classes) predicted probabilities, rows summing to 1.
        y: (n,) integer labels.
        n_bins: number of bins over [0, 1]; 15 as in the paper.

    Returns one `ReliabilityBin` per bin, empty bins included (count 0, confidence and
    accuracy 0.0) so every diagram shares the same x axis.
    """
    p, labels = checked_probabilities(probs, y)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == labels).astype(np.float64)
    index = bin_index(conf, n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    counts = np.bincount(index, minlength=n_bins)
    conf_sum = np.bincount(index, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(index, weights=correct, minlength=n_bins)
    return [
        ReliabilityBin(
            lo=float(edges[b]),
            hi=float(edges[b + 1]),
            confidence=float(conf_sum[b] / counts[b]) if counts[b] else 0.0,
            accuracy=float(acc_sum[b] / counts[b]) if counts[b] else 0.0,
            count=int(counts[b]),
        )
        for b in range(n_bins)
    ]


def calibration_summary(
    probs: np.ndarray,
    y: np.ndarray,
    *,
    confidence: float = 0.95,
    seed: int,
    n_boot: int = 200,
    n_bins: int = 15,
) -> CalibrationSummary:
    """ECE and Brier score with seeded percentile-bootstrap intervals, plus the reliability
    bins and the model's confidence on the samples it misclassifies.

    Guo et al. 2017, https://arxiv.org/abs/1706.04599 (ECE, reliability diagram); the
    interval resamples the n samples with replacement `n_boot` times (Efron & Tibshirani
    1993, percentile method). The bootstrap distribution of ECE sits above the point
    estimate for a well-calibrated model (binning turns noise into |gap| > 0), so the
    interval may not contain the estimate when ECE is near 0; read its upper end as "at
    most this miscalibrated".

    Args:
        probs: (n, classes) predicted probabilities, rows summing to 1.
        y: (n,) integer labels.
        confidence: coverage of the intervals, in (0, 1).
        seed: seeds the bootstrap; the same seed gives the same intervals.
        n_boot: bootstrap resamples.
        n_bins: number of reliability bins over [0, 1].
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot}")
    p, labels = checked_probabilities(probs, y)
    n = len(labels)
    conf = p.max(axis=1)
    correct_mask = p.argmax(axis=1) == labels
    correct = correct_mask.astype(np.float64)
    index = bin_index(conf, n_bins)
    brier_each = brier_per_sample(p, labels)

    rng = np.random.default_rng(seed)
    ece_boot = np.empty(n_boot)
    brier_boot = np.empty(n_boot)
    for i in range(n_boot):
        take = rng.integers(0, n, size=n)
        ece_boot[i] = binned_ece(index[take], conf[take], correct[take], n_bins)
        brier_boot[i] = brier_each[take].mean()
    alpha = 1.0 - confidence
    quantiles = [alpha / 2, 1.0 - alpha / 2]
    ece_lo, ece_hi = (float(v) for v in np.quantile(ece_boot, quantiles))
    brier_lo, brier_hi = (float(v) for v in np.quantile(brier_boot, quantiles))

    wrong_conf = conf[~correct_mask]
    return CalibrationSummary(
        n=n,
        n_bins=n_bins,
        accuracy=float(correct.mean()),
        mean_confidence=float(conf.mean()),
        ece=binned_ece(index, conf, correct, n_bins),
        ece_ci=(ece_lo, ece_hi),
        brier=float(brier_each.mean()),
        brier_ci=(brier_lo, brier_hi),
        bins=tuple(reliability_diagram(p, labels, n_bins)),
        n_wrong=int(wrong_conf.size),
        wrong_confidence_mean=float(wrong_conf.mean()) if wrong_conf.size else None,
        wrong_confidence_median=float(np.median(wrong_conf)) if wrong_conf.size else None,
        confidence=confidence,
        seed=seed,
        n_boot=n_boot,
    )
