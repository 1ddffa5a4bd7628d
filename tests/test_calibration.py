"""Calibration metrics: known answers for ECE and Brier, reliability bins, bootstrap intervals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hardenml.scan.calibration import (
    brier_score,
    calibration_summary,
    expected_calibration_error,
    reliability_diagram,
)
from hardenml.stats import wilson_interval


def calibrated_predictor(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-class probability c per sample, and the sample is right with probability c."""
    rng = np.random.default_rng(seed)
    pred = rng.integers(0, k, size=n)
    c = rng.uniform(1.0 / k + 0.01, 1.0, size=n)
    probs = np.repeat(((1.0 - c) / (k - 1))[:, None], k, axis=1)
    probs[np.arange(n), pred] = c
    right = rng.random(n) < c
    other = (pred + rng.integers(1, k, size=n)) % k
    return probs, np.where(right, pred, other)


def always_sure(n: int, n_right: int, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """One-hot predictions of class 0; the first `n_right` labels agree."""
    probs = np.zeros((n, k))
    probs[:, 0] = 1.0
    y = np.ones(n, dtype=np.int64)
    y[:n_right] = 0
    return probs, y


def test_perfectly_calibrated_predictor_has_ece_near_zero():
    probs, y = calibrated_predictor(20_000, 10, seed=0)
    assert expected_calibration_error(probs, y) < 0.03
    summary = calibration_summary(probs, y, seed=0, n_boot=50)
    assert summary.ece_ci[1] < 0.03


def test_overconfident_predictor_has_ece_equal_to_its_error_rate():
    probs, y = always_sure(1000, 700)
    assert expected_calibration_error(probs, y) == pytest.approx(0.3, abs=1e-12)
    # Each wrong one-hot prediction costs 1 + 1 in Brier.
    assert brier_score(probs, y) == pytest.approx(0.6, abs=1e-12)


def test_bootstrap_interval_of_ece_matches_wilson_when_ece_is_the_error_rate():
    probs, y = always_sure(1000, 700)
    summary = calibration_summary(probs, y, seed=3, n_boot=400)
    lo, hi = wilson_interval(300, 1000)
    assert summary.ece_ci[0] == pytest.approx(lo, abs=0.01)
    assert summary.ece_ci[1] == pytest.approx(hi, abs=0.01)
    assert summary.brier_ci[0] == pytest.approx(2 * lo, abs=0.02)


def test_brier_is_zero_for_correct_one_hot_predictions():
    y = np.array([0, 2, 1, 1, 0])
    assert brier_score(np.eye(3)[y], y) == 0.0


@pytest.mark.parametrize("k", [2, 3, 10])
def test_brier_of_uniform_predictions_is_k_minus_one_over_k(k: int):
    y = np.arange(50) % k
    assert brier_score(np.full((50, k), 1.0 / k), y) == pytest.approx((k - 1) / k)


def test_reliability_bins_by_hand():
    probs = np.array(
        [
            [0.30, 0.25, 0.25, 0.20],  # conf 0.3 -> bin [0, 0.5), right
            [0.40, 0.20, 0.20, 0.20],  # conf 0.4 -> bin [0, 0.5), wrong
            [0.50, 0.50 / 3, 0.50 / 3, 0.50 / 3],  # conf 0.5 -> bin [0.5, 1], right
            [1.00, 0.00, 0.00, 0.00],  # conf 1.0 -> last bin (closed), right
        ]
    )
    y = np.array([0, 1, 0, 0])
    low, high = reliability_diagram(probs, y, n_bins=2)
    assert (low.lo, low.hi, low.count) == (0.0, 0.5, 2)
    assert low.confidence == pytest.approx(0.35) and low.accuracy == pytest.approx(0.5)
    assert (high.lo, high.hi, high.count) == (0.5, 1.0, 2)
    assert high.confidence == pytest.approx(0.75) and high.accuracy == 1.0
    ece = expected_calibration_error(probs, y, n_bins=2)
    assert ece == pytest.approx(0.5 * abs(0.5 - 0.35) + 0.5 * abs(1.0 - 0.75))
    assert low.as_dict() == {"lo": 0.0, "hi": 0.5, "confidence": 0.35, "accuracy": 0.5, "count": 2}


def test_empty_bins_are_kept():
    probs, y = always_sure(10, 7)
    bins = reliability_diagram(probs, y)
    assert len(bins) == 15 and sum(b.count for b in bins) == 10
    assert [b.count for b in bins[:-1]] == [0] * 14


def test_summary_reports_confidence_on_wrong_samples():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2], [0.3, 0.7], [0.55, 0.45]])
    y = np.array([0, 1, 1, 1, 1])  # wrong on rows 1, 2, 4 with confidences 0.6, 0.8, 0.55
    s = calibration_summary(probs, y, seed=0, n_boot=20)
    assert s.n == 5 and s.n_wrong == 3 and s.accuracy == pytest.approx(0.4)
    assert s.wrong_confidence_mean == pytest.approx((0.6 + 0.8 + 0.55) / 3)
    assert s.wrong_confidence_median == pytest.approx(0.6)
    right = calibration_summary(np.eye(2)[[0, 1]], np.array([0, 1]), seed=0, n_boot=20)
    assert right.n_wrong == 0 and right.wrong_confidence_mean is None


def test_summary_is_seeded_and_serialisable():
    probs, y = calibrated_predictor(500, 4, seed=2)
    a = calibration_summary(probs, y, seed=7, n_boot=100)
    b = calibration_summary(probs, y, seed=7, n_boot=100)
    c = calibration_summary(probs, y, seed=8, n_boot=100)
    assert a == b and a.ece_ci != c.ece_ci
    assert a.ece == expected_calibration_error(probs, y)
    assert a.brier == pytest.approx(brier_score(probs, y))
    assert a.brier_ci[0] <= a.brier <= a.brier_ci[1]
    assert a.ece_ci[0] < a.ece_ci[1]
    payload = json.loads(json.dumps(a.as_dict()))
    assert len(payload["bins"]) == 15 and payload["n"] == 500 and payload["seed"] == 7


def test_narrower_interval_with_lower_confidence():
    probs, y = calibrated_predictor(800, 3, seed=4)
    wide = calibration_summary(probs, y, seed=0, confidence=0.99, n_boot=200)
    narrow = calibration_summary(probs, y, seed=0, confidence=0.5, n_boot=200)
    assert narrow.brier_ci[1] - narrow.brier_ci[0] < wide.brier_ci[1] - wide.brier_ci[0]


@pytest.mark.parametrize(
    ("probs", "y", "message"),
    [
        (np.array([[2.0, -1.0], [0.5, 0.5]]), np.array([0, 1]), "logits"),
        (np.array([[0.6, 0.6], [0.5, 0.5]]), np.array([0, 1]), "sum to 1"),
        (np.array([[0.5, 0.5]]), np.array([2]), r"\[0, 2\)"),
        (np.array([[0.5, 0.5]]), np.array([0, 1]), "shape"),
        (np.array([[0.5, 0.5]]), np.array([0.0]), "integer"),
        (np.zeros((0, 2)), np.zeros(0, dtype=np.int64), "at least one"),
    ],
)
def test_bad_inputs_are_refused_loudly(probs: np.ndarray, y: np.ndarray, message: str):
    with pytest.raises(ValueError, match=message):
        expected_calibration_error(probs, y)
