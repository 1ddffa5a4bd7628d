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

# Rows of a probability matrix may miss 1 by float32 rounding of a softmax; anything
# further off is logits or garbage, and a calibration number computed on it would lie.
_ROW_SUM_TOLERANCE = 1e-3


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


def _validated(probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(y)
    if p.ndim != 2 or labels.ndim != 1 or p.shape[0] != labels.shape[0]:
        raise ValueError(
            f"need probs of shape (n, classes) and y of shape (n,), got {p.shape} and "
            f"{labels.shape}"
        )
    if p.shape[0] == 0:
        raise ValueError("calibration needs at least one sample, got none")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"y must hold integer class indices, got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= p.shape[1]:
        raise ValueError(
            f"y must lie in [0, {p.shape[1]}) to index the {p.shape[1]} probability columns, "
            f"got values in [{labels.min()}, {labels.max()}]"
        )
    if not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0:
        raise ValueError("probs must be finite probabilities in [0, 1] (were logits passed?)")
    worst = float(np.abs(p.sum(axis=1) - 1.0).max())
    if worst > _ROW_SUM_TOLERANCE:
        raise ValueError(f"each row of probs must sum to 1; one is off by {worst:.3g}")
    return p, labels.astype(np.int64)


def _bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    if n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)


def _ece(index: np.ndarray, conf: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    counts = np.bincount(index, minlength=n_bins)
    conf_sum = np.bincount(index, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(index, weights=correct, minlength=n_bins)
    # sum_b |acc_sum_b - conf_sum_b| / n equals sum_b (count_b / n) |acc_b - conf_b|.
    return float(np.abs(acc_sum - conf_sum).sum() / counts.sum())


def _brier_per_sample(p: np.ndarray, labels: np.ndarray) -> np.ndarray:
    sq = np.square(p).sum(axis=1)
    p_true = p[np.arange(len(labels)), labels]
    # sum_k (p_k - 1[k=y])^2 = sum_k p_k^2 - 2 p_y + 1, without building the one-hot matrix.
    return sq - 2.0 * p_true + 1.0


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
    p, labels = _validated(probs, y)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == labels).astype(np.float64)
    index = _bin_index(conf, n_bins)
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


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error (Guo et al. 2017, Eq. 3, https://arxiv.org/abs/1706.04599).

    ECE = sum_b (|B_b| / n) |acc(B_b) - conf(B_b)| over `n_bins` equal-width bins of the
    top-class probability. 0 is perfectly calibrated; a model that is always 100% sure and
    right 70% of the time has ECE 0.3.

    Args:
        probs: (n, classes) predicted probabilities, rows summing to 1.
        y: (n,) integer labels.
        n_bins: number of bins over [0, 1]; 15 as in the paper.
    """
    p, labels = _validated(probs, y)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == labels).astype(np.float64)
    return _ece(_bin_index(conf, n_bins), conf, correct, n_bins)


def brier_score(probs: np.ndarray, y: np.ndarray) -> float:
    """Multi-class Brier score (Brier 1950, "Verification of forecasts expressed in terms of
    probability", https://doi.org/10.1175/1520-0493(1950)078<0001:VOFEIT>2.0.CO;2).

    mean over samples of sum over classes of (p_k - onehot(y)_k)^2; 0 for confident correct
    predictions, (K - 1) / K for the uniform prediction over K classes, at most 2.

    Args:
        probs: (n, classes) predicted probabilities, rows summing to 1.
        y: (n,) integer labels.
    """
    p, labels = _validated(probs, y)
    return float(_brier_per_sample(p, labels).mean())


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
    p, labels = _validated(probs, y)
    n = len(labels)
    conf = p.max(axis=1)
    correct_mask = p.argmax(axis=1) == labels
    correct = correct_mask.astype(np.float64)
    index = _bin_index(conf, n_bins)
    brier_each = _brier_per_sample(p, labels)

    rng = np.random.default_rng(seed)
    ece_boot = np.empty(n_boot)
    brier_boot = np.empty(n_boot)
    for i in range(n_boot):
        take = rng.integers(0, n, size=n)
        ece_boot[i] = _ece(index[take], conf[take], correct[take], n_bins)
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
        ece=_ece(index, conf, correct, n_bins),
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
