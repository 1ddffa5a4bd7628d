"""Feature drift: a two-sample Kolmogorov-Smirnov test per feature, Holm-corrected.

Each tested feature's window values are compared with its reference values by the
two-sample KS test (Massey 1951, https://doi.org/10.1080/01621459.1951.10500769; scipy's
`ks_2samp`, exact p-values on small samples). With d features tested at once, d tests at
level alpha would raise a false alarm on almost every window, so the p-values are adjusted
by Holm's step-down method (Holm 1979, https://www.jstor.org/stable/4615733), which keeps
the family-wise error rate (the chance that *any* feature is flagged on undrifted data) at
most alpha under any dependence between the features. Holm rather than Benjamini-Hochberg:
the question an alert asks is "has anything drifted?", a family-wise question, and pixels
or correlated tabular columns are dependent in ways BH's positive-dependence condition does
not promise to cover; Holm costs some power against a shift in a single feature, which the
MMD detector (`hardenml.monitor.mmd`), a joint test, makes up for.

Constant features need no special rule: against a reference that is constant, the KS
distance is the share of window rows off that constant, so a rare stray value is not
flagged and a shifted feature is. High-dimensional inputs (MNIST's 784 pixels) are tested
on a fixed, seeded subset of `max_features` features, drawn among those that vary in the
reference (a pixel that is always 0 says little about a shift in the digits); the readings'
`detail` says so.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import ks_2samp

from hardenml.monitor.readings import (
    DetectorReading,
    MonitorError,
    Window,
    as_rows,
    check_alpha,
    require_rows,
)


def holm_adjust(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input's order.

    With the m p-values sorted ascending, p_(i) becomes max over j <= i of
    min(1, (m - j + 1) p_(j)); a hypothesis is rejected at family-wise level alpha when its
    adjusted p-value is below alpha.
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = p.shape[0]
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


class FeatureDrift:
    """KS per feature against `reference` (shape `(n, *input shape)`, flattened to features).

    Arguments (keyword-only):
        alpha: family-wise false-alarm rate per window (default 0.05).
        max_features: test at most this many features; above it, a seeded subset.
        feature_names: one name per feature (default "x0", "x1", ...).
        seed: picks the subset.
        min_window: windows with fewer rows give no readings (too little evidence).
    One reading per tested feature (Holm-adjusted p-value) plus one overall (`feature`
    None: the largest KS distance and the smallest adjusted p-value).
    """

    name = "feature_drift"

    def __init__(
        self,
        reference: np.ndarray,
        *,
        alpha: float = 0.05,
        max_features: int = 64,
        feature_names: Sequence[str] | None = None,
        seed: int = 0,
        min_window: int = 20,
    ) -> None:
        check_alpha(alpha)
        if max_features < 1 or min_window < 1:
            raise MonitorError("max_features and min_window must be at least 1")
        self.alpha = alpha
        self.max_features = max_features
        self.seed = seed
        self.min_window = min_window
        rows = as_rows(reference, "the reference data (feature drift)")
        require_rows(rows, 2, "the reference data (feature drift)")
        dims = rows.shape[1]
        if feature_names is not None and len(feature_names) != dims:
            raise MonitorError(f"{len(feature_names)} feature names for {dims} features")
        self.feature_names = (
            [f"x{i}" for i in range(dims)] if feature_names is None else list(feature_names)
        )
        self.dims_ = dims
        varying = np.flatnonzero(rows.min(axis=0) < rows.max(axis=0))
        if dims <= max_features:
            self.features_ = np.arange(dims)
        else:
            pool = varying if varying.size >= max_features else np.arange(dims)
            rng = np.random.default_rng(seed)
            self.features_ = np.sort(rng.choice(pool, size=max_features, replace=False))
        self.constant_ = ~np.isin(self.features_, varying)
        self.reference_ = rows[:, self.features_]
        self.scope_ = (
            f"all {dims} features"
            if dims <= max_features
            else f"a seeded subset (seed {seed}) of {max_features} of {dims} features"
        )

    def evaluate(self, window: Window) -> list[DetectorReading]:
        rows = window.flat_inputs(self.name)
        if rows.shape[1] != self.dims_:
            raise MonitorError(
                f"the window's inputs have {rows.shape[1]} features, the reference {self.dims_}"
            )
        n = rows.shape[0]
        if n < self.min_window:
            return []
        result = ks_2samp(self.reference_, rows[:, self.features_], axis=0)
        distances = np.atleast_1d(np.asarray(result.statistic, dtype=np.float64))
        raw = np.atleast_1d(np.asarray(result.pvalue, dtype=np.float64))
        adjusted = holm_adjust(raw)
        m = len(self.features_)
        readings = [
            DetectorReading(
                detector=self.name,
                feature=self.feature_names[index],
                statistic=float(distances[i]),
                p_value=float(adjusted[i]),
                flagged=bool(adjusted[i] < self.alpha),
                n=n,
                detail=(
                    f"KS distance {distances[i]:.3f}, raw p {raw[i]:.3g}, Holm-adjusted over "
                    f"{m} features" + (" (constant in the reference)" if self.constant_[i] else "")
                ),
            )
            for i, index in enumerate(self.features_)
        ]
        # The most shifted feature: the smallest adjusted p-value, ties (several at the
        # floor of 1e-300 or at 1) broken by the larger KS distance.
        worst = int(np.lexsort((-distances, adjusted))[0])
        flagged = int((adjusted < self.alpha).sum())
        readings.append(
            DetectorReading(
                detector=self.name,
                feature=None,
                statistic=float(distances.max()),
                p_value=float(adjusted[worst]),
                flagged=flagged > 0,
                n=n,
                detail=(
                    f"{flagged} of {m} features drifted at family-wise alpha {self.alpha:g} "
                    f"(KS, Holm); tested {self.scope_}; most shifted: "
                    f"{self.feature_names[self.features_[worst]]}"
                ),
            )
        )
        return readings
