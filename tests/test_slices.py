"""Slices: masks from config specs, Newcombe's interval, and which slices get flagged."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hardenml.data import load_source
from hardenml.scan.slices import SliceSpec, newcombe_interval, slice_gaps, slice_masks


@pytest.mark.parametrize(
    ("a", "m", "b", "n", "low", "high"),
    [
        # Newcombe 1998, Table II, method 10 (hybrid score without continuity correction).
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (5, 56, 0, 29, -0.0381, 0.1926),
        (0, 10, 0, 20, -0.1611, 0.2775),
        (10, 10, 0, 20, 0.6791, 1.0000),
    ],
)
def test_newcombe_table_ii(a: int, m: int, b: int, n: int, low: float, high: float):
    lo, hi = newcombe_interval(a, m, b, n)
    assert lo == pytest.approx(low, abs=6e-5) and hi == pytest.approx(high, abs=6e-5)


def test_newcombe_is_antisymmetric_and_narrows_with_confidence():
    lo, hi = newcombe_interval(56, 70, 48, 80)
    swapped = newcombe_interval(48, 80, 56, 70)
    assert swapped == pytest.approx((-hi, -lo))
    lo90, hi90 = newcombe_interval(56, 70, 48, 80, confidence=0.90)
    assert lo < lo90 < hi90 < hi


def test_clearly_worse_slice_is_flagged_and_others_are_not():
    rng = np.random.default_rng(0)
    n = 2000
    bad = np.zeros(n, dtype=bool)
    bad[:300] = True
    correct = np.where(bad, rng.random(n) < 0.6, rng.random(n) < 0.95)
    fine = np.zeros(n, dtype=bool)
    fine[1000:1300] = True
    gaps = slice_gaps(correct, {"bad": bad, "fine": fine}, tolerance=0.05, seed=0)
    by_name = {g.name: g for g in gaps}
    assert by_name["bad"].flagged and by_name["bad"].gap_ci[0] > 0.05
    assert by_name["bad"].n_slice == 300 and by_name["bad"].n_rest == 1700
    assert by_name["bad"].gap == pytest.approx(
        correct[~bad].mean() - correct[bad].mean(), abs=1e-12
    )
    # "fine" is drawn from the better part of the data, so it is better than the rest.
    assert not by_name["fine"].flagged and by_name["fine"].gap < 0


def test_gap_smaller_than_tolerance_is_not_flagged():
    correct = np.r_[
        np.ones(900, bool), np.zeros(100, bool), np.ones(850, bool), np.zeros(150, bool)
    ]
    mask = np.r_[np.zeros(1000, bool), np.ones(1000, bool)]
    (gap,) = slice_gaps(correct, {"s": mask}, tolerance=0.10, seed=0)
    assert gap.gap == pytest.approx(0.05) and gap.gap_ci[0] > 0.0
    assert not gap.flagged
    (strict,) = slice_gaps(correct, {"s": mask}, tolerance=0.0, seed=0)
    assert strict.flagged


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    n_slice=st.integers(1, 40),
    n_rest=st.integers(1, 40),
    tenths=st.integers(0, 10),
    shuffle_seed=st.integers(0, 2**31 - 1),
)
def test_slice_with_the_same_accuracy_is_never_flagged(
    n_slice: int, n_rest: int, tenths: int, shuffle_seed: int
):
    # Both groups hold `tenths` correct answers per ten samples: identical accuracy.
    in_slice = np.r_[np.ones(tenths * n_slice, bool), np.zeros((10 - tenths) * n_slice, bool)]
    rest = np.r_[np.ones(tenths * n_rest, bool), np.zeros((10 - tenths) * n_rest, bool)]
    correct = np.r_[in_slice, rest]
    mask = np.r_[np.ones(in_slice.size, bool), np.zeros(rest.size, bool)]
    order = np.random.default_rng(shuffle_seed).permutation(correct.size)
    (gap,) = slice_gaps(correct[order], {"random": mask[order]}, tolerance=0.0, seed=0)
    assert gap.n_slice == 10 * n_slice and gap.accuracy_slice == pytest.approx(tenths / 10)
    assert gap.gap == pytest.approx(0.0, abs=1e-12)
    assert gap.gap_ci[0] < 0.0 < gap.gap_ci[1]
    assert not gap.flagged


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1), fraction=st.floats(0.1, 0.5))
def test_random_slice_of_one_model_is_not_flagged(seed: int, fraction: float):
    # Every sample is right with the same probability, so a random slice is only worse by
    # chance; with a 5-point tolerance the lower bound of the gap stays below it.
    rng = np.random.default_rng(seed)
    correct = rng.random(1000) < 0.85
    mask = rng.random(1000) < fraction
    (gap,) = slice_gaps(correct, {"random": mask}, tolerance=0.05, seed=seed)
    assert gap.gap_ci[0] <= gap.gap <= gap.gap_ci[1]
    assert not gap.flagged


def test_empty_slice_is_reported_not_flagged_and_serialisable():
    correct = np.ones(10, dtype=bool)
    (gap,) = slice_gaps(correct, {"none": np.zeros(10, bool)}, tolerance=0.0, seed=3)
    assert gap.n_slice == 0 and np.isnan(gap.gap) and not gap.flagged
    payload = json.loads(json.dumps(gap.as_dict()))
    assert payload["gap"] is None and payload["gap_ci"] == [-1.0, 1.0] and payload["seed"] == 3


def test_class_slices_on_digits():
    ds = load_source("digits")
    masks = slice_masks(SliceSpec(name="digit", kind="class"), ds.x, ds.y, classes=ds.classes)
    assert list(masks) == [f"digit={c}" for c in range(10)]
    assert sum(int(m.sum()) for m in masks.values()) == len(ds)
    np.testing.assert_array_equal(masks["digit=3"], ds.y == 3)


def test_range_slice_by_name_and_index_on_breast_cancer():
    from sklearn.datasets import load_breast_cancer

    names = [str(n) for n in load_breast_cancer().feature_names]
    ds = load_source("breast_cancer")
    by_name = SliceSpec(name="big", kind="range", feature="mean radius", low=15.0, high=20.0)
    by_index = SliceSpec(name="big", kind="range", feature=0, low=15.0, high=20.0)
    a = slice_masks(by_name, ds.x, ds.y, names)["big"]
    b = slice_masks(by_index, ds.x, ds.y)["big"]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, (ds.x[:, 0] >= 15.0) & (ds.x[:, 0] < 20.0))
    open_ended = SliceSpec(name="small", kind="range", feature=0, high=15.0)
    c = slice_masks(open_ended, ds.x, ds.y)["small"]
    assert not np.any(c & a) and np.all(c == (ds.x[:, 0] < 15.0))


def test_category_slice_and_images_flatten():
    x = np.array([[0, 1], [2, 1], [1, 0], [2, 2]], dtype=np.float32)
    spec = SliceSpec(name="col0=2", kind="category", feature=0, value=2)
    np.testing.assert_array_equal(slice_masks(spec, x, np.zeros(4))["col0=2"], [0, 1, 0, 1])
    images = np.zeros((3, 1, 2, 2))
    images[1, 0, 1, 1] = 1.0
    pixel = SliceSpec(name="lit", kind="category", feature=3, value=1.0)
    np.testing.assert_array_equal(slice_masks(pixel, images, np.zeros(3))["lit"], [0, 1, 0])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "range", "feature": 0, "low": 2.0, "high": 1.0}, "low < high"),
        ({"kind": "range", "feature": 0}, "low, high or both"),
        ({"kind": "range", "low": 0.0}, "needs a feature"),
        ({"kind": "category", "feature": 0}, "needs a value"),
        ({"kind": "class", "feature": 0}, "takes no feature"),
        ({"kind": "class", "colour": "red"}, "Extra inputs"),
    ],
)
def test_bad_specs_are_refused(fields: dict[str, object], message: str):
    with pytest.raises(ValidationError, match=message):
        SliceSpec.model_validate({"name": "s", **fields})


def test_unknown_feature_is_refused_with_names():
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match="'age' is not among"):
        slice_masks(SliceSpec(name="s", kind="category", feature="age", value=1), x, np.zeros(3))
    with pytest.raises(ValueError, match="outside the 2 features"):
        slice_masks(SliceSpec(name="s", kind="range", feature=5, low=0), x, np.zeros(3))
