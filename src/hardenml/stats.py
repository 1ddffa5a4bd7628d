"""The statistics every room uses, written once: the ground floor (imports nothing of hardenml).

- Wilson's score interval for a proportion: Wilson 1927,
  https://doi.org/10.1080/01621459.1927.10502953.
- Newcombe's hybrid score interval for a difference of two independent proportions:
  Newcombe 1998, method 10.
- The exact McNemar test on paired outcomes: McNemar 1947,
  https://doi.org/10.1007/BF02295996. Only the discordant pairs carry information; under
  "equal accuracy" their split is Binomial(b + c, 1/2) (scipy's `binomtest`).
- The paired percentile bootstrap: Efron & Tibshirani 1993. Both models are resampled with
  the same indices, so their per-sample correlation is kept and the interval of a
  difference is honest; one multinomial resampling matrix (B x n counts) serves every
  statistic of one comparison.
- Expected calibration error over equal-width confidence bins: Guo et al. 2017, Eq. 3,
  https://arxiv.org/abs/1706.04599 (one binning rule, used by the scan, the validator and
  the temperature patch alike).
- The multi-class Brier score: Brier 1950.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest, norm

# Rows of a probability matrix may miss 1 by float32 rounding of a softmax; anything
# further off is logits or garbage, and a calibration number computed on it would lie.
_ROW_SUM_TOLERANCE = 1e-3


def derive_seed(seed: int, *parts: object) -> int:
    """An independent, reproducible seed for one unit of work (threat, budget, batch)."""
    text = "|".join([str(seed), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (good coverage for small n and p near 0/1).

    Wilson 1927, https://doi.org/10.1080/01621459.1927.10502953.
    """
    if n <= 0:
        return (0.0, 1.0)
    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 or n successes the bound is exactly 0 or 1; rounding left 3e-18 in reports.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return (low, high)


def newcombe_interval(
    successes_a: int, n_a: int, successes_b: int, n_b: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Interval for p_a - p_b from two independent binomial samples.

    Newcombe 1998, method 10 (hybrid score, no continuity correction),
    https://doi.org/10.1002/(SICI)1097-0258(19980430)17:8<873::AID-SIM779>3.0.CO;2-I:
    with Wilson intervals (l_a, u_a) and (l_b, u_b) and d = p_a - p_b,
    L = d - sqrt((p_a - l_a)^2 + (u_b - p_b)^2), U = d + sqrt((u_a - p_a)^2 + (p_b - l_b)^2).
    Both samples must be non-empty.
    """
    if n_a <= 0 or n_b <= 0:
        raise ValueError(f"both samples need at least one trial, got n_a={n_a}, n_b={n_b}")
    if not (0 <= successes_a <= n_a and 0 <= successes_b <= n_b):
        raise ValueError("successes must lie between 0 and the number of trials")
    p_a, p_b = successes_a / n_a, successes_b / n_b
    l_a, u_a = wilson_interval(successes_a, n_a, confidence)
    l_b, u_b = wilson_interval(successes_b, n_b, confidence)
    d = p_a - p_b
    lower = d - math.sqrt((p_a - l_a) ** 2 + (u_b - p_b) ** 2)
    upper = d + math.sqrt((u_a - p_a) ** 2 + (p_b - l_b) ** 2)
    return (max(-1.0, lower), min(1.0, upper))


def paired_difference_interval(
    a_only: int, b_only: int, both: int, neither: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Interval for p_a - p_b from paired binary outcomes on the same n samples.

    Newcombe 1998, "Improving the confidence interval for the difference between binomial
    proportions based on paired data", method 10 (https://doi.org/10.1002/(SICI)1097-
    0258(19981130)17:22<2635::AID-SIM954>3.0.CO;2-C): the Wilson intervals (l_a, u_a),
    (l_b, u_b) of the two marginal proportions, combined with the correlation phi of the
    pairs (continuity-corrected when positive). `a_only`: successes of a alone, `b_only`:
    of b alone. Unlike a difference of two Wilson intervals it is narrow when the two
    agree on most samples, and unlike the Wald interval it is never zero-width.
    """
    cells = (a_only, b_only, both, neither)
    if min(cells) < 0:
        raise ValueError(f"counts must be non-negative, got {cells}")
    n = sum(cells)
    if n == 0:
        return (-1.0, 1.0)
    p_a, p_b = (both + a_only) / n, (both + b_only) / n
    l_a, u_a = wilson_interval(both + a_only, n, confidence)
    l_b, u_b = wilson_interval(both + b_only, n, confidence)
    margins = (both + a_only) * (b_only + neither) * (both + b_only) * (a_only + neither)
    agreement = both * neither - a_only * b_only
    if margins == 0:
        phi = 0.0
    elif agreement > 0:
        phi = max(agreement - n / 2, 0.0) / math.sqrt(margins)
    else:
        phi = agreement / math.sqrt(margins)
    d = p_a - p_b
    below = (p_a - l_a) ** 2 - 2 * phi * (p_a - l_a) * (u_b - p_b) + (u_b - p_b) ** 2
    above = (u_a - p_a) ** 2 - 2 * phi * (u_a - p_a) * (p_b - l_b) + (p_b - l_b) ** 2
    return (max(-1.0, d - math.sqrt(max(below, 0.0))), min(1.0, d + math.sqrt(max(above, 0.0))))


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


def quantile_difference_interval(
    baseline: np.ndarray,
    candidate: np.ndarray,
    q: float,
    *,
    confidence: float = 0.95,
    samples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(quantile `q` of `candidate` minus that of `baseline`, interval low, interval high):
    two independent samples (latencies of two set-ups, say), each resampled on its own
    (percentile bootstrap, Efron & Tibshirani 1993, ch. 13). For a tail quantile the
    interval is only as good as the tail is sampled: p99 of 1,000 values rests on the
    ten largest."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must lie in (0, 1), got {q}")
    rng = np.random.default_rng(seed)
    estimates = []
    for values in (np.asarray(baseline, np.float64), np.asarray(candidate, np.float64)):
        if values.size == 0:
            raise ValueError("both samples need at least one value")
        # Resampled in chunks of 250: (samples, n) indices at once would be samples x n x 8 bytes.
        chunks = [
            np.quantile(
                values[rng.integers(0, values.size, (min(250, samples - i), values.size))],
                q,
                axis=1,
            )
            for i in range(0, samples, 250)
        ]
        estimates.append(np.concatenate(chunks))
    boot = estimates[1] - estimates[0]
    point = float(np.quantile(candidate, q) - np.quantile(baseline, q))
    lo, hi = percentile_interval(boot, confidence)
    return point, lo, hi


def mean_difference_interval(
    baseline: np.ndarray, candidate: np.ndarray, counts: np.ndarray, confidence: float
) -> tuple[float, float, float]:
    """(mean(candidate - baseline), interval low, interval high) under `counts`."""
    diff = np.asarray(candidate, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    boot = counts @ diff / diff.shape[0]
    lo, hi = percentile_interval(boot, confidence)
    return float(diff.mean()), lo, hi


def bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    if n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)


def calibration_gaps(probs: np.ndarray, y: np.ndarray, bins: int) -> np.ndarray:
    """(n, bins): each sample's (correct - confidence) in the column of its bin."""
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(np.float64)
    index = bin_index(conf, bins)
    gaps = np.zeros((len(y), bins))
    gaps[np.arange(len(y)), index] = correct - conf
    return gaps


def binned_ece(index: np.ndarray, conf: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    counts = np.bincount(index, minlength=n_bins)
    conf_sum = np.bincount(index, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(index, weights=correct, minlength=n_bins)
    # sum_b |acc_sum_b - conf_sum_b| / n equals sum_b (count_b / n) |acc_b - conf_b|.
    return float(np.abs(acc_sum - conf_sum).sum() / counts.sum())


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
    base_gaps = calibration_gaps(baseline_probs, y, bins)
    cand_gaps = calibration_gaps(candidate_probs, y, bins)
    boot = (np.abs(counts @ cand_gaps).sum(axis=1) - np.abs(counts @ base_gaps).sum(axis=1)) / n
    lo, hi = percentile_interval(boot, confidence)
    ece_b = expected_calibration_error(baseline_probs, y, bins)
    ece_c = expected_calibration_error(candidate_probs, y, bins)
    return ece_b, ece_c, ece_c - ece_b, lo, hi


def brier_per_sample(p: np.ndarray, labels: np.ndarray) -> np.ndarray:
    sq = np.square(p).sum(axis=1)
    p_true = p[np.arange(len(labels)), labels]
    # sum_k (p_k - 1[k=y])^2 = sum_k p_k^2 - 2 p_y + 1, without building the one-hot matrix.
    return sq - 2.0 * p_true + 1.0


def checked_probabilities(probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`probs` as float64 (n, classes) probabilities and `y` as int64 labels, or a
    ValueError that says what is wrong with them (logits, shapes, labels out of range)."""
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


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """ECE = sum_b (|B_b| / n) |acc(B_b) - conf(B_b)| over `n_bins` equal-width bins of the
    top-class probability (Guo et al. 2017, Eq. 3). 0 is perfectly calibrated; a model that
    is always 100% sure and right 70% of the time has ECE 0.3.

    Args:
        probs: (n, classes) predicted probabilities, rows summing to 1.
        y: (n,) integer labels.
    """
    p, labels = checked_probabilities(probs, y)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == labels).astype(np.float64)
    return binned_ece(bin_index(conf, n_bins), conf, correct, n_bins)


def brier_score(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean over samples of sum over classes of (p_k - onehot(y)_k)^2: 0 for confident
    correct predictions, (K - 1) / K for the uniform prediction over K classes, at most 2."""
    p, labels = checked_probabilities(probs, y)
    return float(brier_per_sample(p, labels).mean())
