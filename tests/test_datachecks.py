"""Data checks on real data: leakage between splits, feature shift, label balance."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hardenml.data import load_source, split
from hardenml.datachecks import duplicate_leakage, feature_shift, label_balance


@pytest.fixture(scope="module")
def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    train, test = split(load_source("digits"), test_fraction=0.25, seed=0)
    return train.x, train.y, test.x, test.y


@pytest.fixture(scope="module")
def cancer_halves() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_breast_cancer

    names = [str(n) for n in load_breast_cancer().feature_names]
    a, b = split(load_source("breast_cancer"), test_fraction=0.5, seed=0)
    return a.x, b.x, names


# -- leakage ------------------------------------------------------------------------------


def test_digits_split_has_no_leakage(digits_split):
    x_train, _, x_test, _ = digits_split
    report = duplicate_leakage(x_train, x_test, seed=0)
    assert report.exact_count == 0 and report.near_count == 0
    assert report.n_train == len(x_train) and report.n_test_checked == len(x_test)
    assert report.reference_distance > 0


def test_injected_exact_copies_are_found(digits_split):
    x_train, _, x_test, _ = digits_split
    copied_from = np.array([3, 50, 400, 700, 1200])
    leaky = np.concatenate([x_test, x_train[copied_from]])
    report = duplicate_leakage(x_train, leaky, seed=0)
    assert report.exact_count == 5
    assert report.exact_fraction == pytest.approx(5 / len(leaky))
    expected = {(int(i), len(x_test) + k) for k, i in enumerate(copied_from)}
    assert set(report.exact_pairs) == expected
    # A copy is also the nearest possible neighbour.
    assert report.near_count == 5 and {p[:2] for p in report.near_pairs} == expected


def test_dtype_does_not_hide_an_exact_copy(digits_split):
    x_train, _, _, _ = digits_split
    report = duplicate_leakage(x_train, x_train[:3].astype(np.float64), seed=0)
    assert report.exact_count == 3 and report.exact_pairs == ((0, 0), (1, 1), (2, 2))


def test_injected_near_copies_are_found_but_not_as_exact(digits_split):
    x_train, _, x_test, _ = digits_split
    rng = np.random.default_rng(1)
    copied_from = np.array([10, 20, 30, 40, 50])
    noisy = x_train[copied_from] + rng.normal(0, 0.005, size=(5, 64)).astype(np.float32)
    report = duplicate_leakage(x_train, np.concatenate([x_test, noisy]), seed=0)
    assert report.exact_count == 0 and report.near_count == 5
    assert sorted(p[0] for p in report.near_pairs) == copied_from.tolist()
    assert all(p[2] < report.near_ratio * report.reference_distance for p in report.near_pairs)
    lo, hi = report.near_fraction_ci
    assert lo < report.near_fraction < hi


def test_subsampling_is_seeded_and_capped(digits_split):
    x_train, _, x_test, _ = digits_split
    a = duplicate_leakage(x_train, x_test, max_train=300, max_test=100, seed=4)
    b = duplicate_leakage(x_train, x_test, max_train=300, max_test=100, seed=4)
    c = duplicate_leakage(x_train, x_test, max_train=300, max_test=100, seed=5)
    assert a == b and a.reference_distance != c.reference_distance
    assert a.n_train_checked == 300 and a.n_test_checked == 100
    # Fewer train rows leave larger gaps between neighbours.
    full = duplicate_leakage(x_train, x_test, seed=4)
    assert a.reference_distance > full.reference_distance
    json.dumps(a.as_dict())


def test_leakage_refuses_mismatched_rows():
    with pytest.raises(ValueError, match="64 values but test rows have 10"):
        duplicate_leakage(np.zeros((5, 64)), np.zeros((5, 10)), seed=0)


# -- distribution shift -------------------------------------------------------------------


def test_shifted_feature_is_flagged_and_the_rest_are_not(cancer_halves):
    reference, evaluation, names = cancer_halves
    shifted = evaluation.copy()
    shifted[:, 3] += reference[:, 3].std()
    report = feature_shift(reference, shifted, feature_names=names)
    assert report.shifted == ["mean area"]
    area = report.features[3]
    assert area.test == "ks" and area.p_adjusted < 1e-6 and area.statistic > 0.2
    assert all(f.p_adjusted >= f.p_value for f in report.features)


def test_two_halves_of_one_dataset_do_not_shift(cancer_halves):
    reference, evaluation, _ = cancer_halves
    report = feature_shift(reference, evaluation)
    assert report.shifted == [] and len(report.features) == 30
    payload = json.loads(json.dumps(report.as_dict()))
    assert payload["n_reference"] + payload["n_evaluation"] == 569


def test_categorical_feature_gets_chi_squared():
    rng = np.random.default_rng(0)
    ref = np.column_stack([rng.integers(0, 3, 400), rng.normal(size=400)])
    same = np.column_stack([rng.integers(0, 3, 400), rng.normal(size=400)])
    skewed = np.column_stack([rng.choice(3, 400, p=[0.6, 0.2, 0.2]), rng.normal(size=400)])
    report = feature_shift(ref, skewed, feature_names=["colour", "size"])
    assert [f.test for f in report.features] == ["chi2", "ks"]
    assert report.shifted == ["colour"]
    assert not feature_shift(ref, same).features[0].shifted
    # Declared categorical by name even though it is not integer-coded.
    declared = feature_shift(ref, same, feature_names=["colour", "size"], categorical=["size"])
    assert declared.features[1].test == "chi2"


def test_benjamini_hochberg_matches_by_hand():
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(300, 4))
    ev = rng.normal(size=(300, 4)) + np.array([0.0, 0.15, 0.3, 0.0])
    report = feature_shift(ref, ev)
    p = np.array([f.p_value for f in report.features])
    order = np.argsort(p)
    ranked = p[order] * len(p) / np.arange(1, len(p) + 1)
    by_hand = np.minimum.accumulate(ranked[::-1])[::-1].clip(max=1.0)
    np.testing.assert_allclose([report.features[i].p_adjusted for i in order], by_hand)


# -- label balance ------------------------------------------------------------------------


def test_stratified_split_is_balanced_like_its_reference(digits_split):
    _, y_train, _, y_test = digits_split
    balance = label_balance(y_test, reference=y_train)
    assert not balance.flagged and balance.test == "chi2_homogeneity"
    assert balance.n == len(y_test) and sum(balance.counts) == len(y_test)
    assert balance.imbalance_ratio is not None and balance.imbalance_ratio < 1.2


def test_subsampled_class_is_flagged(digits_split):
    _, y_train, _, y_test = digits_split
    zeros = np.flatnonzero(y_test == 0)
    keep = np.setdiff1d(np.arange(len(y_test)), zeros[5:])  # keep 5 of the zeros
    balance = label_balance(y_test[keep], reference=y_train)
    assert balance.flagged and balance.p_value < 1e-3
    assert balance.counts[0] == 5 and balance.imbalance_ratio == pytest.approx(
        max(balance.counts) / 5
    )
    lo, hi = balance.proportions_ci[0]
    assert lo < balance.proportions[0] < hi < balance.reference_proportions[0]


def test_goodness_of_fit_against_uniform_and_expected():
    y = load_source("breast_cancer").y  # 212 malignant, 357 benign
    uniform = label_balance(y)
    assert uniform.flagged and uniform.test == "chi2_goodness_of_fit"
    assert uniform.imbalance_ratio == pytest.approx(357 / 212)
    matched = label_balance(y, expected=[212 / 569, 357 / 569])
    assert not matched.flagged and matched.p_value > 0.99


def test_missing_and_unexpected_classes():
    y = np.array([0, 0, 1, 1, 3])
    balance = label_balance(y, expected=[0.5, 0.5, 0.0, 0.0])
    assert balance.missing_classes == (2,) and balance.imbalance_ratio is None
    assert balance.unexpected_classes == (3,) and balance.flagged
    json.dumps(balance.as_dict())
    with pytest.raises(ValueError, match="not both"):
        label_balance(y, reference=y, expected=[0.25] * 4)
