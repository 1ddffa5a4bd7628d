"""Slices of the evaluation data and the accuracy gap between each slice and the rest.

A slice is declared in the config (`SliceSpec`): one per class, a feature range
[low, high), or one value of a categorical feature. `slice_masks` turns a spec into
boolean masks; `slice_gaps` compares accuracy inside each slice with accuracy on the
rest of the data.

The gap (rest - slice) gets Newcombe's hybrid score interval for a difference of two
independent proportions, built from the two Wilson intervals (Newcombe 1998, "Interval
estimation for the difference between independent proportions: comparison of eleven
methods", method 10,
https://doi.org/10.1002/(SICI)1097-0258(19980430)17:8<873::AID-SIM779>3.0.CO;2-I).
A slice is flagged only when the whole interval lies above the policy's tolerance: the
slice is then confidently worse than the rest by more than the tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from hardenml.config import SliceSpec
from hardenml.stats import newcombe_interval, wilson_interval


def _column(spec: SliceSpec, x: np.ndarray, feature_names: Sequence[str] | None) -> np.ndarray:
    flat = x.reshape(x.shape[0], -1)
    feature = spec.feature
    if isinstance(feature, str):
        names = list(feature_names or [])
        if feature not in names:
            raise ValueError(
                f"slice {spec.name!r}: feature {feature!r} is not among the feature names "
                f"{names[:20]}{' ...' if len(names) > 20 else ''}"
            )
        index = names.index(feature)
    elif feature is None:
        raise ValueError(f"slice {spec.name!r}: a {spec.kind!r} slice needs a feature")
    else:
        index = feature
        if not -flat.shape[1] <= index < flat.shape[1]:
            raise ValueError(
                f"slice {spec.name!r}: feature index {index} is outside the "
                f"{flat.shape[1]} features"
            )
    return flat[:, index]


def slice_masks(
    spec: SliceSpec,
    x: np.ndarray,
    y: np.ndarray,
    feature_names: Sequence[str] | None = None,
    *,
    classes: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Boolean masks over the n samples for the slices a spec declares.

    Args:
        spec: the slice declaration.
        x: (n, ...) inputs; features are the columns of x reshaped to (n, -1).
        y: (n,) integer labels.
        feature_names: names of the flattened features, to resolve `spec.feature` by name.
        classes: class names, used to name the per-class slices.

    Returns name -> (n,) bool mask. A "class" spec gives one entry per class present in
    y, named "<spec.name>=<class>"; the other kinds give one entry named `spec.name`.
    """
    labels = np.asarray(y)
    if x.shape[0] != labels.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has {labels.shape[0]}")
    if spec.kind == "class":
        out: dict[str, np.ndarray] = {}
        for c in np.unique(labels):
            label = classes[int(c)] if classes is not None else str(c)
            out[f"{spec.name}={label}"] = labels == c
        return out
    column = _column(spec, x, feature_names)
    if spec.kind == "range":
        mask = np.ones(column.shape[0], dtype=bool)
        if spec.low is not None:
            mask &= column >= spec.low
        if spec.high is not None:
            mask &= column < spec.high
        return {spec.name: mask}
    value = spec.value
    if isinstance(value, str) and np.issubdtype(column.dtype, np.number):
        raise ValueError(
            f"slice {spec.name!r}: value {value!r} is text but feature {spec.feature!r} is numeric"
        )
    return {spec.name: np.asarray(column == value, dtype=bool)}


@dataclass(frozen=True)
class SliceGap:
    """Accuracy inside one slice against accuracy on the rest, and the gap between them.

    `gap` is accuracy(rest) - accuracy(slice): positive when the slice is worse.
    `gap_ci` is Newcombe's hybrid score interval (method 10); `flagged` means
    gap_ci[0] > tolerance. With an empty slice or an empty rest the gap is undefined
    (NaN, interval (-1, 1)) and never flagged.
    """

    name: str
    n_slice: int
    n_rest: int
    correct_slice: int
    correct_rest: int
    accuracy_slice: float
    accuracy_slice_ci: tuple[float, float]
    accuracy_rest: float
    accuracy_rest_ci: tuple[float, float]
    gap: float
    gap_ci: tuple[float, float]
    tolerance: float
    flagged: bool
    confidence: float
    seed: int

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("accuracy_slice_ci", "accuracy_rest_ci", "gap_ci"):
            out[key] = list(out[key])
        for key in ("accuracy_slice", "accuracy_rest", "gap"):
            if math.isnan(out[key]):
                out[key] = None
        return out


def slice_gaps(
    correct: np.ndarray,
    masks: Mapping[str, np.ndarray],
    *,
    tolerance: float,
    confidence: float = 0.95,
    seed: int,
) -> list[SliceGap]:
    """Accuracy gap (rest - slice) for every slice, with Newcombe's interval, flagged when
    the slice is confidently worse than the rest by more than `tolerance`.

    Newcombe 1998, method 10,
    https://doi.org/10.1002/(SICI)1097-0258(19980430)17:8<873::AID-SIM779>3.0.CO;2-I.
    The slice and the rest are disjoint, so the two proportions are independent as the
    method requires.

    Args:
        correct: (n,) bool, whether the model got each sample right.
        masks: slice name -> (n,) bool mask, e.g. from `slice_masks`.
        tolerance: the largest accuracy gap the policy accepts, in [0, 1].
        confidence: coverage of the intervals, in (0, 1).
        seed: recorded with each result so it can become a `Measurement`; the interval is
            closed-form, so nothing is drawn at random.

    Returns one `SliceGap` per mask, in the order of `masks`.
    """
    ok = np.asarray(correct)
    if ok.ndim != 1 or ok.dtype != np.bool_:
        raise ValueError(f"correct must be a 1-D bool array, got {ok.dtype} of shape {ok.shape}")
    if not 0.0 <= tolerance <= 1.0:
        raise ValueError(f"tolerance must lie in [0, 1], got {tolerance}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    results = []
    for name, raw in masks.items():
        mask = np.asarray(raw)
        if mask.shape != ok.shape or mask.dtype != np.bool_:
            raise ValueError(
                f"slice {name!r}: mask must be bool of shape {ok.shape}, got {mask.dtype} "
                f"of shape {mask.shape}"
            )
        n_s, n_r = int(mask.sum()), int((~mask).sum())
        k_s, k_r = int(ok[mask].sum()), int(ok[~mask].sum())
        acc_s = k_s / n_s if n_s else math.nan
        acc_r = k_r / n_r if n_r else math.nan
        if n_s and n_r:
            gap, gap_ci = acc_r - acc_s, newcombe_interval(k_r, n_r, k_s, n_s, confidence)
        else:
            gap, gap_ci = math.nan, (-1.0, 1.0)
        results.append(
            SliceGap(
                name=name,
                n_slice=n_s,
                n_rest=n_r,
                correct_slice=k_s,
                correct_rest=k_r,
                accuracy_slice=acc_s,
                accuracy_slice_ci=wilson_interval(k_s, n_s, confidence),
                accuracy_rest=acc_r,
                accuracy_rest_ci=wilson_interval(k_r, n_r, confidence),
                gap=gap,
                gap_ci=gap_ci,
                tolerance=tolerance,
                flagged=bool(gap_ci[0] > tolerance),
                confidence=confidence,
                seed=seed,
            )
        )
    return results
