"""Joint drift of all features: the kernel two-sample test on maximum mean discrepancy.

Gretton, Borgwardt, Rasch, Schoelkopf and Smola 2012, "A Kernel Two-Sample Test",
https://jmlr.org/papers/v13/gretton12a.html: the unbiased MMD^2 (their Eq. 3) under a
Gaussian kernel k(x, y) = exp(-||x - y||^2 / (2 sigma^2)), with sigma the median pairwise
distance of the reference (their Sec. 8's heuristic; fixed on the reference, so that a
drifting window cannot widen the kernel until it no longer sees itself drift).

The p-value is a permutation test: the pooled rows are split at random into a
reference-sized and a window-sized part and the statistic recomputed. All permutations
are one matrix product (indicator rows times the kernel matrix), so 200 permutations of a
few hundred rows take milliseconds. When the number of distinct splits is at most
`permutations`, every split is enumerated and the p-value is exact; otherwise it is
(1 + #{permuted >= observed}) / (1 + permutations) (Phipson and Smyth 2010,
https://doi.org/10.2202/1544-6115.1585), never zero.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from hardenml.monitor.readings import (
    DetectorReading,
    MonitorError,
    Window,
    as_rows,
    check_alpha,
    require_rows,
    seeded_subsample,
)

# Permuted statistics within this of the observed one count as ties: the two are the same
# sums in a different order, and float rounding must not decide the p-value.
_TIE_TOLERANCE = 1e-12


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) squared Euclidean distances, clipped at 0 against rounding."""
    sq = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2.0 * a @ b.T
    return np.maximum(sq, 0.0)


def median_bandwidth(rows: np.ndarray) -> float:
    """The median pairwise distance between distinct rows; 1.0 when all rows coincide."""
    sq = squared_distances(rows, rows)
    upper = sq[np.triu_indices(rows.shape[0], k=1)]
    positive = upper[upper > 0]
    return float(np.sqrt(np.median(positive))) if positive.size else 1.0


def mmd2_unbiased(kernel: np.ndarray, in_first: np.ndarray) -> np.ndarray:
    """Unbiased MMD^2 for each split: `in_first` is (splits, N) booleans marking the first
    sample's rows of the pooled `kernel` (N, N), whose diagonal is 1 (a Gaussian kernel)."""
    a = in_first.astype(np.float64)
    m = a[0].sum()
    n = kernel.shape[0] - m
    row_sums = kernel.sum(axis=1)
    total = row_sums.sum()
    within_first = ((a @ kernel) * a).sum(axis=1)
    across = a @ row_sums - within_first
    within_second = total - 2.0 * across - within_first
    return (
        (within_first - m) / (m * (m - 1))
        + (within_second - n) / (n * (n - 1))
        - 2.0 * across / (m * n)
    )


class MMDDrift:
    """Gaussian-kernel MMD^2 between the window and `reference` (`(n, *input shape)`).

    Arguments (keyword-only):
        alpha: false-alarm rate per window (default 0.05).
        permutations: permuted splits for the p-value (default 200).
        max_reference: reference rows kept, a seeded subsample (default 300).
        max_window: the window's most recent rows used (default 500), bounding the cost.
        seed: the subsample and the permutations; the same window gives the same p-value.
        min_window: windows with fewer rows give no reading.
    """

    name = "mmd_drift"

    def __init__(
        self,
        reference: np.ndarray,
        *,
        alpha: float = 0.05,
        permutations: int = 200,
        max_reference: int = 300,
        max_window: int = 500,
        seed: int = 0,
        min_window: int = 20,
    ) -> None:
        check_alpha(alpha)
        if permutations < 1 or max_reference < 2 or max_window < 2 or min_window < 2:
            raise MonitorError(
                "permutations must be at least 1, and max_reference, max_window and "
                "min_window at least 2"
            )
        self.alpha = alpha
        self.permutations = permutations
        self.max_reference = max_reference
        self.max_window = max_window
        self.seed = seed
        self.min_window = min_window
        rows = as_rows(reference, "the reference data (MMD drift)")
        require_rows(rows, 2, "the reference data (MMD drift)")
        rows = seeded_subsample(rows, max_reference, seed)
        self.reference_ = rows
        self.bandwidth_ = median_bandwidth(rows)

    def evaluate(self, window: Window) -> list[DetectorReading]:
        rows = window.flat_inputs(self.name)
        if rows.shape[1] != self.reference_.shape[1]:
            raise MonitorError(
                f"the window's inputs have {rows.shape[1]} features, the reference "
                f"{self.reference_.shape[1]}"
            )
        rows = rows[-self.max_window :]
        n = rows.shape[0]
        if n < self.min_window:
            return []
        statistic, p_value, exact = self.test(rows)
        return [
            DetectorReading(
                detector=self.name,
                feature=None,
                statistic=statistic,
                p_value=p_value,
                flagged=p_value < self.alpha,
                n=n,
                detail=(
                    f"unbiased MMD^2 {statistic:.4g} (Gaussian kernel, median-heuristic "
                    f"bandwidth {self.bandwidth_:.3g}) against {self.reference_.shape[0]} "
                    f"reference rows; "
                    + (
                        "exact permutation p-value"
                        if exact
                        else f"{self.permutations} permutations"
                    )
                ),
            )
        ]

    def test(self, rows: np.ndarray) -> tuple[float, float, bool]:
        """(MMD^2, p-value, whether the p-value is exact) of `rows` against the reference."""
        pooled = np.concatenate([self.reference_, rows])
        total, m = pooled.shape[0], self.reference_.shape[0]
        kernel = np.exp(-squared_distances(pooled, pooled) / (2.0 * self.bandwidth_**2))
        observed_split = np.zeros((1, total), dtype=bool)
        observed_split[0, :m] = True
        observed = float(mmd2_unbiased(kernel, observed_split)[0])
        exact = math.comb(total, m) <= self.permutations
        if exact:
            splits = np.zeros((math.comb(total, m), total), dtype=bool)
            for i, chosen in enumerate(itertools.combinations(range(total), m)):
                splits[i, list(chosen)] = True
        else:
            rng = np.random.default_rng(self.seed)
            order = rng.permuted(np.tile(np.arange(total), (self.permutations, 1)), axis=1)
            splits = np.zeros((self.permutations, total), dtype=bool)
            np.put_along_axis(splits, order[:, :m], True, axis=1)
        permuted = mmd2_unbiased(kernel, splits)
        at_least = int((permuted >= observed - _TIE_TOLERANCE).sum())
        p_value = at_least / len(splits) if exact else (1 + at_least) / (1 + len(splits))
        return observed, float(p_value), exact
