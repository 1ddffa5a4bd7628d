"""Known answers for the validator's statistics and its verdict on constructed outcomes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hardenml.config import parse_config
from hardenml.stats import (
    ece_difference_interval,
    expected_calibration_error,
    mcnemar_exact,
    mean_difference_interval,
    paired_difference_interval,
    quantile_difference_interval,
    resampling_counts,
    wilson_interval,
)
from hardenml.validate import Outcomes, compare


def paired(b: int, c: int, both: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample correctness with `b` baseline-only, `c` candidate-only right answers."""
    base = np.array([1] * b + [0] * c + [1] * both + [0] * neither, dtype=bool)
    cand = np.array([0] * b + [1] * c + [1] * both + [0] * neither, dtype=bool)
    return base, cand


def test_wilson_interval_matches_the_textbook_values_and_is_exact_at_the_ends() -> None:
    # Newcombe 1998, Table I: 81/263 -> (0.2553, 0.3662); 0/10 -> (0, 0.2775).
    low, high = wilson_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    assert wilson_interval(0, 10)[0] == 0.0
    assert round(wilson_interval(0, 10)[1], 4) == 0.2775
    assert wilson_interval(10, 10)[1] == 1.0
    assert round(wilson_interval(10, 10)[0], 4) == 0.7225


@given(st.integers(min_value=1, max_value=5000), st.data())
def test_wilson_interval_contains_the_proportion(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(min_value=0, max_value=n))
    low, high = wilson_interval(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0


def test_mcnemar_exact_matches_the_binomial_by_hand() -> None:
    # 10 discordant pairs split 1 : 9. Two-sided exact p = 2 * P(X <= 1 | n=10, 1/2)
    # = 2 * (1 + 10) / 2**10 = 22 / 1024.
    base, cand = paired(b=1, c=9, both=80, neither=10)
    test = mcnemar_exact(base, cand)
    assert (test.b, test.c) == (1, 9)
    assert test.p_value == pytest.approx(22 / 1024, abs=1e-12)
    # Symmetric in which model wins; concordant pairs do not matter.
    assert mcnemar_exact(cand, base).p_value == pytest.approx(22 / 1024, abs=1e-12)
    base2, cand2 = paired(b=1, c=9, both=5, neither=0)
    assert mcnemar_exact(base2, cand2).p_value == pytest.approx(22 / 1024, abs=1e-12)


def test_mcnemar_without_discordant_pairs_is_p_one() -> None:
    base, cand = paired(b=0, c=0, both=50, neither=5)
    assert mcnemar_exact(base, cand).p_value == 1.0
    # A 5 : 5 split is as balanced as it gets.
    base, cand = paired(b=5, c=5, both=50, neither=5)
    assert mcnemar_exact(base, cand).p_value == pytest.approx(1.0)


def test_paired_difference_interval_matches_newcombes_worked_example() -> None:
    """Newcombe 1998 (paired data), example (a): 12 and 2 discordant pairs of 50, method 10
    gives 0.0569 to 0.3404 for a difference of 0.2."""
    lo, hi = paired_difference_interval(12, 2, 36, 0)
    assert (round(lo, 4), round(hi, 4)) == (0.0569, 0.3404)


@given(st.integers(0, 40), st.integers(0, 40), st.integers(0, 40), st.integers(0, 40))
def test_paired_difference_interval_contains_the_estimate_and_is_never_zero_width(
    a_only: int, b_only: int, both: int, neither: int
) -> None:
    n = a_only + b_only + both + neither
    lo, hi = paired_difference_interval(a_only, b_only, both, neither)
    if n:
        assert lo - 1e-12 <= (a_only - b_only) / n <= hi + 1e-12
    assert -1.0 <= lo < hi <= 1.0


def test_ece_of_a_calibrated_predictor_is_near_zero_and_of_an_overconfident_one_is_not() -> None:
    rng = np.random.default_rng(0)
    n = 20000
    conf = rng.uniform(0.5, 1.0, n)
    label_is_top = rng.uniform(size=n) < conf  # right exactly as often as it claims
    probs = np.stack([conf, 1 - conf], axis=1)
    y = np.where(label_is_top, 0, 1)
    assert expected_calibration_error(probs, y) < 0.015
    # Claims 99% but is right half the time: ECE = 0.99 - 0.5.
    over = np.tile([0.99, 0.01], (n, 1))
    coin = (rng.uniform(size=n) < 0.5).astype(int)
    assert expected_calibration_error(over, coin) == pytest.approx(0.49, abs=0.015)


def test_paired_bootstrap_interval_is_zero_for_identical_models_and_excludes_zero_for_a_gain() -> (
    None
):
    base, cand = paired(b=0, c=0, both=300, neither=100)
    counts = resampling_counts(len(base), samples=500, seed=0)
    assert mean_difference_interval(base, cand, counts, 0.95) == (0.0, 0.0, 0.0)
    base, cand = paired(b=5, c=45, both=300, neither=50)
    diff, lo, hi = mean_difference_interval(base, cand, counts, 0.95)
    assert diff == pytest.approx(40 / 400)
    assert 0 < lo < diff < hi
    # The interval is about +-1.96 standard errors of a paired difference.
    se = math.sqrt((5 + 45) / 400 - diff**2) / math.sqrt(400)
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.2)


def test_ece_difference_interval_is_paired() -> None:
    rng = np.random.default_rng(1)
    n = 1000
    probs = rng.dirichlet(np.ones(3), n)
    y = rng.integers(0, 3, n)
    counts = resampling_counts(n, samples=300, seed=0)
    ece_b, ece_c, diff, lo, hi = ece_difference_interval(probs, probs, y, counts, 0.95)
    assert ece_b == ece_c == pytest.approx(expected_calibration_error(probs, y))
    assert (diff, lo, hi) == (0.0, 0.0, 0.0)


CONFIG = """
version = 1
[project]
name = "t"
[model]
name = "m"
kind = "sklearn"
path = "m.skops"
classes = ["a", "b"]
[model.input]
shape = [2]
[data]
source = "digits"
[[threats]]
name = "pgd-linf"
attack = "pgd"
budgets = [0.1]
[policy]
min_clean_accuracy = 0.8
clean_margin = 0.02
ece_margin = 0.02
[[policy.robust]]
threat = "pgd-linf"
budget = 0.1
min_accuracy = 0.5
"""


def outcomes(clean: np.ndarray, robust: np.ndarray, y: np.ndarray) -> Outcomes:
    """Probabilities that are calibrated enough: 0.9 on the predicted class."""
    pred = np.where(clean, y, 1 - y)
    probs = np.where(pred[:, None] == np.arange(2), 0.9, 0.1)
    return Outcomes(clean=clean, probs=probs, robust={"pgd-linf@0.1": robust})


def test_verdict_passes_a_real_gain_and_fails_a_clean_loss() -> None:
    config = parse_config(CONFIG, root=Path("."))
    y = np.zeros(400, dtype=np.int64)
    clean_b, clean_c = paired(b=2, c=2, both=360, neither=36)
    rob_b, rob_c = paired(b=5, c=80, both=100, neither=215)
    good = compare(
        config, outcomes(clean_b, rob_b, y), outcomes(clean_c, rob_c, y), y, seed=0, samples=500
    )
    assert good.passed, good.reasons
    names = [c.name for c in good.checks]
    assert names == [
        "clean_accuracy non-inferiority",
        "robust_accuracy[pgd-linf@0.1] improvement",
        "calibration (ECE) not worse",
        "no finding reopened",
        "behavioural suites pass",
    ]
    assert all(c.reason for c in good.checks)

    # The candidate loses 12.5 points of clean accuracy: not non-inferior; it now fails
    # min_clean_accuracy, which the baseline met (a reopened finding); and at the same
    # 0.9 confidence it is now overconfident (ECE 0.005 -> 0.12).
    clean_b, clean_c = paired(b=52, c=2, both=310, neither=36)
    bad = compare(
        config, outcomes(clean_b, rob_b, y), outcomes(clean_c, rob_c, y), y, seed=0, samples=500
    )
    failed = {c.name for c in bad.checks if not c.passed}
    assert failed == {
        "clean_accuracy non-inferiority",
        "calibration (ECE) not worse",
        "no finding reopened",
    }
    assert any("clean_accuracy = 0.780 < 0.800" in r for r in bad.reasons)


def test_no_gain_where_the_baseline_fell_short_fails_the_robust_check() -> None:
    config = parse_config(CONFIG, root=Path("."))
    y = np.zeros(400, dtype=np.int64)
    clean_b, clean_c = paired(b=0, c=0, both=360, neither=40)
    rob_b, rob_c = paired(b=10, c=12, both=100, neither=278)
    verdict = compare(
        config, outcomes(clean_b, rob_b, y), outcomes(clean_c, rob_c, y), y, seed=0, samples=500
    )
    robust = verdict.checks[1]
    assert not robust.passed and not verdict.passed
    assert "no significant gain" in robust.reason


def test_the_default_margin_passes_a_candidate_better_on_every_count_at_n_200() -> None:
    """Issue 11: +1.0 point clean and +20.5 robust at n = 200 failed at the old 0.01."""
    config = parse_config(CONFIG.replace("clean_margin = 0.02\n", ""), root=Path("."))
    assert config.policy.clean_margin == 0.02
    y = np.zeros(200, dtype=np.int64)
    clean_b, clean_c = paired(b=3, c=5, both=180, neither=12)  # +1.0 point
    rob_b, rob_c = paired(b=4, c=45, both=60, neither=91)  # +20.5 points
    verdict = compare(
        config, outcomes(clean_b, rob_b, y), outcomes(clean_c, rob_c, y), y, seed=0, samples=500
    )
    assert verdict.checks[0].passed, verdict.checks[0].reason


def test_a_failed_non_inferiority_says_what_sample_size_would_show_it() -> None:
    from hardenml.validate.verdict import samples_needed

    # diff 0, lower end -0.03, margin 0.01: the half-width must shrink 3x, so 9x the samples.
    assert samples_needed(0.0, -0.03, 200, 0.01) == 1800
    assert samples_needed(-0.05, -0.08, 200, 0.01) is None  # worse than the margin itself
    config = parse_config(
        CONFIG.replace("clean_margin = 0.02", "clean_margin = 0.005"), root=Path(".")
    )
    y = np.zeros(200, dtype=np.int64)
    clean_b, clean_c = paired(b=6, c=7, both=170, neither=17)
    rob = np.ones(200, dtype=bool)
    verdict = compare(config, outcomes(clean_b, rob, y), outcomes(clean_c, rob, y), y, seed=0)
    check = verdict.checks[0]
    assert not check.passed and "paired samples (n = 200 now) would show it" in check.reason


def test_identical_models_say_their_interval_has_no_spread_rather_than_print_zero_width() -> None:
    config = parse_config(CONFIG, root=Path("."))
    y = np.zeros(36, dtype=np.int64)
    same = np.arange(36) % 3 > 0
    verdict = compare(config, outcomes(same, same, y), outcomes(same, same, y), y, seed=0)
    assert "every paired sample agrees" in verdict.checks[0].reason
    assert "[+0.0 pts, +0.0 pts]" not in verdict.checks[0].reason


def test_quantile_difference_interval_known_shift_and_seed() -> None:
    rng = np.random.default_rng(3)
    bare = rng.gamma(4.0, 1.5, size=800)
    served = bare + 2.0  # every value 2 later: every quantile moves by 2
    point, lo, hi = quantile_difference_interval(bare, served, 0.99, seed=1)
    assert point == pytest.approx(2.0)
    assert lo < 2.0 < hi
    assert quantile_difference_interval(bare, served, 0.99, seed=1) == (point, lo, hi)
    with pytest.raises(ValueError, match="q must lie"):
        quantile_difference_interval(bare, served, 1.0)
    with pytest.raises(ValueError, match="at least one value"):
        quantile_difference_interval(bare, np.array([]), 0.5)


def test_quantile_difference_interval_covers_the_true_difference() -> None:
    """Coverage of the 90% quantile's difference between two exponential samples (true
    difference: (2 - 1) * ln 10), over 100 pairs: near the nominal 95%."""
    truth = np.log(10.0)
    rng = np.random.default_rng(0)
    covered = 0
    for trial in range(100):
        a, b = rng.exponential(1.0, 400), rng.exponential(2.0, 400)
        _, lo, hi = quantile_difference_interval(a, b, 0.9, samples=400, seed=trial)
        covered += lo <= truth <= hi
    assert 85 <= covered <= 100
