"""Paired statistics for comparing two models on the same samples.

- The exact McNemar test: McNemar 1947, https://doi.org/10.1007/BF02295996. Only the
  discordant pairs carry information; under "equal accuracy" each is equally likely to
  favour either model, so their split is Binomial(b + c, 1/2) (scipy's `binomtest`).
- The paired bootstrap: Efron & Tibshirani 1993, "An Introduction to the Bootstrap",
  percentile intervals. Both models are resampled with the same indices, so their
  per-sample correlation is kept and the interval of a difference is honest.
- Expected calibration error: Guo et al. 2017, https://arxiv.org/abs/1706.04599, with
  equal-width confidence bins.

One multinomial resampling matrix (B x n counts) serves every statistic, so the
accuracy and calibration intervals of one comparison come from the same resamples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest


@dataclass(frozen=True)
class McNemar:
    """`b`: baseline right, candidate wrong; `c`: baseline wrong, candidate right."""

    b: int
    c: int
    p_value: float


def mcnemar_exact(baseline_correct: np.ndarray, candidate_correct: np.ndarray) -> McNemar:
    """Two-sided exact McNemar test on paired per-sample correctness."""
    base = np.asarray(baseline_correct, dtype=bool)
    cand = np.asarray(candidate_correct, dtype=bool)
    if base.shape != cand.shape:
        raise ValueError(f"paired outcomes differ in shape: {base.shape} vs {cand.shape}")
    b = int((base & ~cand).sum())
    c = int((~base & cand).sum())
    p = 1.0 if b + c == 0 else float(binomtest(c, b + c, 0.5).pvalue)
    return McNemar(b, c, p)


def resampling_counts(n: int, *, samples: int, seed: int) -> np.ndarray:
    """(samples, n) bootstrap counts: how often each sample is drawn in each resample."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=samples)


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(values, [tail, 1 - tail])
    return float(lo), float(hi)


def mean_difference_interval(
    baseline: np.ndarray, candidate: np.ndarray, counts: np.ndarray, confidence: float
) -> tuple[float, float, float]:
    """(mean(candidate - baseline), interval low, interval high) under `counts`."""
    diff = np.asarray(candidate, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    boot = counts @ diff / diff.shape[0]
    lo, hi = percentile_interval(boot, confidence)
    return float(diff.mean()), lo, hi


def _calibration_gaps(probs: np.ndarray, y: np.ndarray, bins: int) -> np.ndarray:
    """(n, bins): each sample's (correct - confidence) in the column of its bin."""
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(np.float64)
    index = np.minimum((conf * bins).astype(np.int64), bins - 1)
    gaps = np.zeros((len(y), bins))
    gaps[np.arange(len(y)), index] = correct - conf
    return gaps


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Sum over bins of |accuracy - confidence| weighted by the bin's share of samples.

    `probs`: (n, classes) probabilities; `y`: (n,) labels. 0 for a perfectly calibrated
    predictor (up to sampling noise), at most 1.
    """
    if len(y) == 0:
        return 0.0
    return float(np.abs(_calibration_gaps(probs, y, bins).sum(axis=0)).sum() / len(y))


def ece_difference_interval(
    baseline_probs: np.ndarray,
    candidate_probs: np.ndarray,
    y: np.ndarray,
    counts: np.ndarray,
    confidence: float,
    bins: int = 15,
) -> tuple[float, float, float, float, float]:
    """(ECE baseline, ECE candidate, difference, interval low, interval high)."""
    n = len(y)
    base_gaps = _calibration_gaps(baseline_probs, y, bins)
    cand_gaps = _calibration_gaps(candidate_probs, y, bins)
    boot = (np.abs(counts @ cand_gaps).sum(axis=1) - np.abs(counts @ base_gaps).sum(axis=1)) / n
    lo, hi = percentile_interval(boot, confidence)
    ece_b = expected_calibration_error(baseline_probs, y, bins)
    ece_c = expected_calibration_error(candidate_probs, y, bins)
    return ece_b, ece_c, ece_c - ece_b, lo, hi
