"""Checks on the data itself: train/test leakage, distribution shift, label balance.

Each check takes NumPy arrays and returns a frozen dataclass with `as_dict()`:

- `duplicate_leakage`: test rows that also occur in train, byte for byte (hashed rows)
  or nearly (nearest-neighbour distance far below the typical distance between train
  rows). Leakage inflates every metric the scan measures on the test split.
- `feature_shift`: per-feature two-sample tests between reference and evaluation data,
  Kolmogorov-Smirnov for continuous features and chi-squared for categorical ones, with
  the Benjamini-Hochberg correction across features.
- `label_balance`: class counts and proportions, the imbalance ratio, and a chi-squared
  test against the reference label distribution.

Datasets themselves are loaded by `hardenml.data`; this module only inspects arrays.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

from hardenml.stats import wilson_interval


def _rows(name: str, x: np.ndarray) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim < 1 or arr.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one sample, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != np.bool_:
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr.reshape(arr.shape[0], -1)


# ---------------------------------------------------------------------------------------
# Leakage
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeakageReport:
    """Test rows duplicated from train, exactly and nearly.

    Exact duplicates are counted over every test row. Near duplicates are test rows whose
    nearest train row lies within `near_ratio` times `reference_distance` (the median
    distance from a train row to its nearest other train row); they include the exact
    duplicates, and are counted on `n_test_checked` test rows against `n_train_checked`
    train rows when the sets were sub-sampled, hence the Wilson interval on the fraction.
    Pairs are (train index, test index) in the caller's indexing; near pairs also carry
    the distance, nearest first.
    """

    n_train: int
    n_test: int
    exact_count: int
    exact_fraction: float
    exact_pairs: tuple[tuple[int, int], ...]
    near_count: int
    near_fraction: float
    near_fraction_ci: tuple[float, float]
    near_pairs: tuple[tuple[int, int, float], ...]
    near_ratio: float
    reference_distance: float
    n_train_checked: int
    n_test_checked: int
    confidence: float
    seed: int

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["exact_pairs"] = [list(p) for p in self.exact_pairs]
        out["near_pairs"] = [list(p) for p in self.near_pairs]
        out["near_fraction_ci"] = list(self.near_fraction_ci)
        return out


def _row_digests(rows: np.ndarray) -> list[bytes]:
    # float64 holds every float32 and small integer exactly, so the same value stored in
    # different dtypes hashes the same; adding 0.0 folds -0.0 into 0.0.
    canon = np.ascontiguousarray(rows, dtype=np.float64) + 0.0
    return [hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in canon]


def duplicate_leakage(
    train_x: np.ndarray,
    test_x: np.ndarray,
    *,
    near_ratio: float = 0.1,
    max_train: int = 5000,
    max_test: int = 2000,
    n_examples: int = 10,
    confidence: float = 0.95,
    seed: int,
) -> LeakageReport:
    """Exact and near-duplicate leakage of train rows into the test set.

    Exact: each row (flattened, as float64) is hashed with BLAKE2b; a test row whose
    digest occurs in train is a duplicate. Near: scikit-learn `NearestNeighbors`
    (Euclidean) finds each test row's nearest train row; it is a near duplicate when that
    distance is at most `near_ratio` times the median nearest-other-row distance within
    train, a scale-free threshold in the spirit of the near-duplicate audits of
    Barz & Denzler 2020, "Do We Train on Test Data? Purging CIFAR of Near-Duplicates",
    https://arxiv.org/abs/1902.00423.

    Args:
        train_x: (n_train, ...) training inputs.
        test_x: (n_test, ...) evaluation inputs with the same per-sample shape.
        near_ratio: threshold as a fraction of the typical train-to-train distance.
        max_train: at most this many train rows enter the neighbour search (sub-sampled
            with `seed` beyond it), to cap the quadratic work.
        max_test: at most this many test rows are searched for near duplicates.
        n_examples: how many example pairs of each kind to return.
        confidence: coverage of the interval on the near-duplicate fraction.
        seed: seeds the sub-sampling; the same seed gives the same report.
    """
    from sklearn.neighbors import NearestNeighbors

    train, test = _rows("train_x", train_x), _rows("test_x", test_x)
    if train.shape[1] != test.shape[1]:
        raise ValueError(
            f"train rows have {train.shape[1]} values but test rows have {test.shape[1]}"
        )
    if near_ratio < 0:
        raise ValueError(f"near_ratio must be non-negative, got {near_ratio}")
    if max_train < 2 or max_test < 1:
        raise ValueError("max_train must be at least 2 and max_test at least 1")

    first_in_train: dict[bytes, int] = {}
    for i, digest in enumerate(_row_digests(train)):
        first_in_train.setdefault(digest, i)
    exact = [
        (first_in_train[d], j) for j, d in enumerate(_row_digests(test)) if d in first_in_train
    ]

    rng = np.random.default_rng(seed)
    train_idx = np.arange(train.shape[0])
    if train.shape[0] > max_train:
        train_idx = np.sort(rng.choice(train.shape[0], size=max_train, replace=False))
    test_idx = np.arange(test.shape[0])
    if test.shape[0] > max_test:
        test_idx = np.sort(rng.choice(test.shape[0], size=max_test, replace=False))

    fitted = train[train_idx].astype(np.float64)
    near: list[tuple[int, int, float]] = []
    reference = 0.0
    if fitted.shape[0] >= 2:
        search = NearestNeighbors(n_neighbors=2).fit(fitted)
        within, _ = search.kneighbors(fitted)
        # Column 0 is the row itself (or an identical twin): column 1 is the nearest other.
        reference = float(np.median(within[:, 1]))
        dist, nearest = search.kneighbors(test[test_idx].astype(np.float64), n_neighbors=1)
        hit = dist[:, 0] <= near_ratio * reference
        near = sorted(
            (
                (int(train_idx[nearest[k, 0]]), int(test_idx[k]), float(dist[k, 0]))
                for k in np.flatnonzero(hit)
            ),
            key=lambda p: (p[2], p[1]),
        )
    n_checked = int(test_idx.size)
    return LeakageReport(
        n_train=int(train.shape[0]),
        n_test=int(test.shape[0]),
        exact_count=len(exact),
        exact_fraction=len(exact) / test.shape[0],
        exact_pairs=tuple(exact[:n_examples]),
        near_count=len(near),
        near_fraction=len(near) / n_checked,
        near_fraction_ci=wilson_interval(len(near), n_checked, confidence),
        near_pairs=tuple(near[:n_examples]),
        near_ratio=near_ratio,
        reference_distance=reference,
        n_train_checked=int(train_idx.size),
        n_test_checked=n_checked,
        confidence=confidence,
        seed=seed,
    )


# ---------------------------------------------------------------------------------------
# Distribution shift
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureShift:
    """One feature's two-sample test: statistic, raw and BH-adjusted p-value."""

    index: int
    name: str
    test: Literal["ks", "chi2"]
    statistic: float
    p_value: float
    p_adjusted: float
    shifted: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ShiftReport:
    """Per-feature shift between reference and evaluation data; `shifted` lists the
    names of the features whose adjusted p-value fell below `alpha`."""

    n_reference: int
    n_evaluation: int
    alpha: float
    features: tuple[FeatureShift, ...]

    @property
    def shifted(self) -> list[str]:
        return [f.name for f in self.features if f.shifted]

    def as_dict(self) -> dict[str, Any]:
        return {
            "n_reference": self.n_reference,
            "n_evaluation": self.n_evaluation,
            "alpha": self.alpha,
            "shifted": self.shifted,
            "features": [f.as_dict() for f in self.features],
        }


def _is_categorical(ref: np.ndarray, ev: np.ndarray, max_levels: int) -> bool:
    both = np.concatenate([ref, ev])
    if not np.all(np.isfinite(both)) or not np.all(both == np.round(both)):
        return False
    return np.unique(both).size <= max_levels


def _chi2_two_sample(ref: np.ndarray, ev: np.ndarray) -> tuple[float, float]:
    levels = np.unique(np.concatenate([ref, ev]))
    if levels.size < 2:
        return 0.0, 1.0
    ref_counts = np.bincount(np.searchsorted(levels, ref), minlength=levels.size)
    ev_counts = np.bincount(np.searchsorted(levels, ev), minlength=levels.size)
    result = stats.chi2_contingency(np.stack([ref_counts, ev_counts]), correction=False)
    return float(result.statistic), float(result.pvalue)


def feature_shift(
    reference: np.ndarray,
    evaluation: np.ndarray,
    *,
    feature_names: Sequence[str] | None = None,
    categorical: Sequence[int | str] | None = None,
    max_levels: int = 10,
    alpha: float = 0.05,
) -> ShiftReport:
    """Per-feature distribution shift, corrected for testing many features at once.

    Continuous features: two-sample Kolmogorov-Smirnov test (`scipy.stats.ks_2samp`;
    Massey 1951, https://doi.org/10.1080/01621459.1951.10500769). Categorical features:
    chi-squared test of homogeneity on the 2 x levels table of counts
    (`scipy.stats.chi2_contingency`). The p-values are adjusted with Benjamini & Hochberg
    1995, https://doi.org/10.1111/j.2517-6161.1995.tb02031.x, which keeps the expected
    share of false alarms among flagged features at `alpha`.

    Args:
        reference: (n_ref, ...) data the model was built on; features are the columns of
            the samples flattened.
        evaluation: (n_eval, ...) data the model is evaluated or served on.
        feature_names: names for the flattened features (default: their indices).
        categorical: indices or names of categorical features. When None, a feature is
            treated as categorical if it holds only integers with at most `max_levels`
            distinct values across both sets.
        max_levels: the level count up to which integer features count as categorical.
        alpha: false discovery rate at which a feature is flagged as shifted.
    """
    ref, ev = _rows("reference", reference), _rows("evaluation", evaluation)
    if ref.shape[1] != ev.shape[1]:
        raise ValueError(
            f"reference rows have {ref.shape[1]} features but evaluation rows have {ev.shape[1]}"
        )
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(ev))):
        raise ValueError("reference and evaluation must be finite (impute NaN before testing)")
    n_features = ref.shape[1]
    names = [str(i) for i in range(n_features)] if feature_names is None else list(feature_names)
    if len(names) != n_features:
        raise ValueError(f"got {len(names)} feature names for {n_features} features")
    chosen: set[int] | None = None
    if categorical is not None:
        chosen = set()
        for c in categorical:
            if isinstance(c, str):
                if c not in names:
                    raise ValueError(f"categorical feature {c!r} is not among the feature names")
                chosen.add(names.index(c))
            elif not 0 <= c < n_features:
                raise ValueError(f"categorical feature index {c} is outside the {n_features}")
            else:
                chosen.add(int(c))

    kinds: list[Literal["ks", "chi2"]] = []
    statistics, p_values = [], []
    for j in range(n_features):
        a, b = ref[:, j].astype(np.float64), ev[:, j].astype(np.float64)
        is_cat = j in chosen if chosen is not None else _is_categorical(a, b, max_levels)
        if is_cat:
            stat, p = _chi2_two_sample(a, b)
            kinds.append("chi2")
        else:
            ks = stats.ks_2samp(a, b)
            stat, p = float(ks.statistic), float(ks.pvalue)
            kinds.append("ks")
        statistics.append(stat)
        p_values.append(p)
    adjusted = stats.false_discovery_control(np.asarray(p_values), method="bh")
    features = tuple(
        FeatureShift(
            index=j,
            name=names[j],
            test=kinds[j],
            statistic=statistics[j],
            p_value=p_values[j],
            p_adjusted=float(adjusted[j]),
            shifted=bool(adjusted[j] < alpha),
        )
        for j in range(n_features)
    )
    return ShiftReport(
        n_reference=int(ref.shape[0]),
        n_evaluation=int(ev.shape[0]),
        alpha=alpha,
        features=features,
    )


# ---------------------------------------------------------------------------------------
# Label balance
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelBalance:
    """Class counts and proportions (with Wilson intervals) and a chi-squared test against
    the reference distribution.

    `imbalance_ratio` is the largest class count over the smallest, None when a class has
    no sample (`missing_classes`). `unexpected_classes` occur here but have probability 0
    in the reference. `flagged` when p < alpha or a class is unexpected.
    """

    n: int
    counts: tuple[int, ...]
    proportions: tuple[float, ...]
    proportions_ci: tuple[tuple[float, float], ...]
    imbalance_ratio: float | None
    missing_classes: tuple[int, ...]
    reference_proportions: tuple[float, ...]
    test: Literal["chi2_homogeneity", "chi2_goodness_of_fit"]
    statistic: float
    p_value: float
    unexpected_classes: tuple[int, ...]
    alpha: float
    flagged: bool
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("counts", "proportions", "missing_classes", "reference_proportions"):
            out[key] = list(out[key])
        out["unexpected_classes"] = list(self.unexpected_classes)
        out["proportions_ci"] = [list(ci) for ci in self.proportions_ci]
        return out


def _labels(name: str, y: np.ndarray) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be a non-empty 1-D array of integer class indices")
    if arr.min() < 0:
        raise ValueError(f"{name} holds negative class indices")
    return arr.astype(np.int64)


def label_balance(
    y: np.ndarray,
    *,
    reference: np.ndarray | None = None,
    expected: Sequence[float] | None = None,
    n_classes: int | None = None,
    alpha: float = 0.05,
    confidence: float = 0.95,
) -> LabelBalance:
    """Label balance of `y` and whether it departs from the reference label distribution.

    With `reference` labels (e.g. the training labels) the test is Pearson's chi-squared
    test of homogeneity on the 2 x classes count table (`scipy.stats.chi2_contingency`):
    the reference is itself a sample, and a goodness-of-fit test that took its
    proportions as exact would flag the reference's own noise. With `expected`
    proportions known in advance, or with neither (a uniform expectation), it is Pearson's
    chi-squared goodness-of-fit test (`scipy.stats.chisquare`; Pearson 1900,
    https://doi.org/10.1080/14786440009463897).

    Args:
        y: (n,) integer labels to inspect.
        reference: (m,) reference labels; excludes `expected`.
        expected: per-class probabilities, summing to 1; excludes `reference`.
        n_classes: number of classes (default: one more than the largest label seen).
        alpha: significance level for `flagged`.
        confidence: coverage of the per-class Wilson intervals.
    """
    if reference is not None and expected is not None:
        raise ValueError("give reference labels or expected proportions, not both")
    labels = _labels("y", y)
    ref = None if reference is None else _labels("reference", reference)
    seen = int(max(labels.max(), -1 if ref is None else ref.max())) + 1
    k = seen if n_classes is None else n_classes
    if k < seen:
        raise ValueError(f"n_classes = {n_classes} but labels go up to {seen - 1}")
    if expected is not None and len(expected) != k:
        raise ValueError(f"expected has {len(expected)} proportions for {k} classes")
    counts = np.bincount(labels, minlength=k)
    n = int(labels.size)

    test: Literal["chi2_homogeneity", "chi2_goodness_of_fit"]
    if ref is not None:
        ref_counts = np.bincount(ref, minlength=k)
        reference_p = ref_counts / ref_counts.sum()
        table = np.stack([ref_counts, counts])
        table = table[:, table.sum(axis=0) > 0]
        if table.shape[1] < 2:
            stat, p = 0.0, 1.0
        else:
            result = stats.chi2_contingency(table, correction=False)
            stat, p = float(result.statistic), float(result.pvalue)
        test = "chi2_homogeneity"
    else:
        reference_p = np.full(k, 1.0 / k) if expected is None else np.asarray(expected, float)
        if np.any(reference_p < 0) or abs(reference_p.sum() - 1.0) > 1e-6:
            raise ValueError("expected proportions must be non-negative and sum to 1")
        support = reference_p > 0
        if support.sum() < 2:
            stat, p = 0.0, 1.0
        else:
            observed = counts[support]
            # Classes outside the reference support are reported as unexpected, and the
            # test compares the rest with the reference renormalised over the support.
            f_exp = reference_p[support] / reference_p[support].sum() * observed.sum()
            if observed.sum() == 0:
                stat, p = 0.0, 1.0
            else:
                result = stats.chisquare(observed, f_exp=f_exp)
                stat, p = float(result.statistic), float(result.pvalue)
        test = "chi2_goodness_of_fit"

    unexpected = tuple(int(c) for c in np.flatnonzero((counts > 0) & (reference_p == 0)))
    missing = tuple(int(c) for c in np.flatnonzero(counts == 0))
    return LabelBalance(
        n=n,
        counts=tuple(int(c) for c in counts),
        proportions=tuple(float(c / n) for c in counts),
        proportions_ci=tuple(wilson_interval(int(c), n, confidence) for c in counts),
        imbalance_ratio=None if missing else float(counts.max() / counts.min()),
        missing_classes=missing,
        reference_proportions=tuple(float(v) for v in reference_p),
        test=test,
        statistic=stat,
        p_value=p,
        unexpected_classes=unexpected,
        alpha=alpha,
        flagged=bool(p < alpha or unexpected),
        confidence=confidence,
    )
