"""Corruption failure rates: per-severity Wilson intervals, mean CE, bootstrap, normalisation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hardenml.scan.corruption_metrics import (
    corruption_failure_rates,
    normalized_corruption_error,
)
from hardenml.stats import wilson_interval


def right_first(n_right: int, n: int = 100) -> np.ndarray:
    return np.arange(n) < n_right


def degrading(name: str = "gaussian_noise", *, seed: int = 0):
    severities = {s: right_first(100 - 10 * s) for s in range(1, 6)}
    return corruption_failure_rates(right_first(95), severities, corruption=name, seed=seed)


def test_known_failure_rates_and_mean_corruption_error():
    result = degrading()
    assert [s.severity for s in result.severities] == [1, 2, 3, 4, 5]
    assert [s.failure_rate for s in result.severities] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert result.severities[2].failures == 30 and result.severities[2].n == 100
    assert result.severities[2].ci == wilson_interval(30, 100)
    assert result.clean.severity == 0 and result.clean.failure_rate == pytest.approx(0.05)
    assert result.mean_error == pytest.approx(0.3)
    assert result.mean_relative_error == pytest.approx(0.25)
    assert result.paired
    assert result.mean_error_ci[0] < 0.3 < result.mean_error_ci[1]
    assert result.mean_relative_error_ci[0] < 0.25 < result.mean_relative_error_ci[1]


def test_single_severity_bootstrap_matches_wilson():
    rng = np.random.default_rng(0)
    clean = rng.random(1000) < 0.9
    corrupted = rng.random(1000) < 0.7
    result = corruption_failure_rates(clean, {3: corrupted}, corruption="blur", seed=1, n_boot=400)
    lo, hi = result.severities[0].ci
    assert result.mean_error_ci[0] == pytest.approx(lo, abs=0.01)
    assert result.mean_error_ci[1] == pytest.approx(hi, abs=0.01)


def test_paired_resampling_keeps_the_correlation_between_severities():
    rng = np.random.default_rng(1)
    clean = rng.random(300) < 0.8
    # Corruption that changes nothing: every resample of the same rows has zero relative error.
    same = corruption_failure_rates(
        clean, {1: clean.copy(), 2: clean.copy()}, corruption="identity", seed=0
    )
    assert same.paired and same.mean_relative_error_ci == (0.0, 0.0)
    # Different lengths cannot be paired; resampled separately the interval has width.
    unpaired = corruption_failure_rates(
        clean, {1: clean[:250].copy(), 2: clean[:200].copy()}, corruption="identity", seed=0
    )
    assert not unpaired.paired
    assert unpaired.mean_relative_error_ci[1] - unpaired.mean_relative_error_ci[0] > 0.05


def test_seeded_and_serialisable():
    a, b, c = degrading(seed=4), degrading(seed=4), degrading(seed=5)
    assert a == b and a.mean_error_ci != c.mean_error_ci
    payload = json.loads(json.dumps(a.as_dict()))
    assert payload["corruption"] == "gaussian_noise" and len(payload["severities"]) == 5
    assert payload["severities"][0]["ci"] == list(wilson_interval(10, 100))


def test_severities_are_sorted_whatever_the_mapping_order():
    result = corruption_failure_rates(
        right_first(90), {5: right_first(40), 1: right_first(80)}, corruption="fog", seed=0
    )
    assert [s.severity for s in result.severities] == [1, 5]
    assert [s.failure_rate for s in result.severities] == pytest.approx([0.2, 0.6])


def test_normalised_corruption_error_against_a_baseline():
    model = degrading()  # mean error 0.3, relative 0.25
    severities = {s: right_first(100 - 15 * s) for s in range(1, 6)}  # 0.15..0.75: mean 0.45
    baseline = corruption_failure_rates(
        right_first(95), severities, corruption="gaussian_noise", seed=0
    )
    ce, relative = normalized_corruption_error(model, baseline)
    assert ce == pytest.approx(0.3 / 0.45) and relative == pytest.approx(0.25 / 0.40)
    with pytest.raises(ValueError, match="baseline measured on"):
        normalized_corruption_error(degrading("fog"), baseline)


@pytest.mark.parametrize(
    ("clean", "severities", "message"),
    [
        (right_first(9, 10), {}, "no severities"),
        (right_first(9, 10), {0: right_first(5, 10)}, "positive integers"),
        (np.ones(10), {1: right_first(5, 10)}, "bool"),
        (right_first(9, 10), {1: np.zeros(0, bool)}, "non-empty"),
    ],
)
def test_bad_inputs_are_refused(clean: np.ndarray, severities: dict, message: str):
    with pytest.raises(ValueError, match=message):
        corruption_failure_rates(clean, severities, corruption="c", seed=0)
