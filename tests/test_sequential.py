"""Sequential evaluation: anytime-valid intervals that let a scan stop early, correctly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hardenml import workflow
from hardenml.scan.sequential import confidence_sequence, mixture_rho, sequential_check
from workspace import write_workspace


@pytest.mark.parametrize("p", [0.05, 0.5, 0.8, 0.97])
def test_confidence_sequence_covers_at_every_time(p: float):
    """Simulation: the chance the interval EVER excludes the truth, over all looks, <= alpha."""
    rng = np.random.default_rng(123)
    alpha, horizon, runs = 0.05, 1500, 1000
    rho = mixture_rho(horizon, alpha)
    draws = rng.random((runs, horizon)) < p
    sums = draws.cumsum(axis=1)
    t = np.arange(1, horizon + 1)
    v = t * 0.25 + rho
    radius = np.sqrt(v * np.log(v / (rho * alpha * alpha))) / t
    missed = (np.abs(sums / t - p) >= radius).any(axis=1).mean()
    assert missed <= alpha, f"time-uniform miscoverage {missed:.3f} > {alpha}"
    # And the same numbers through the public function, at one look.
    lo, hi = confidence_sequence(int(sums[0, 99]), 100, alpha=alpha, rho=rho)
    assert lo == pytest.approx(max(0.0, sums[0, 99] / 100 - radius[99]))
    assert hi == pytest.approx(min(1.0, sums[0, 99] / 100 + radius[99]))


def test_interval_narrows_and_decides():
    wide = sequential_check(45, 50, 0.7, confidence=0.95, n_max=1000)
    narrow = sequential_check(900, 1000, 0.7, confidence=0.95, n_max=1000)
    assert narrow.ci_high - narrow.ci_low < wide.ci_high - wide.ci_low
    assert narrow.decision == "pass" and narrow.settled
    assert sequential_check(300, 1000, 0.7, confidence=0.95, n_max=1000).decision == "fail"
    assert sequential_check(70, 100, 0.7, confidence=0.95, n_max=1000).decision == "undecided"


@pytest.mark.parametrize("p", [0.66, 0.7, 0.74])
def test_wrong_decisions_are_rare_near_the_threshold(p: float):
    """Near the threshold the test may stay undecided, but it almost never decides wrongly."""
    rng = np.random.default_rng(7)
    threshold, horizon = 0.7, 2000
    wrong = 0
    for _ in range(300):
        sums = (rng.random(horizon) < p).cumsum()
        for n in range(50, horizon + 1, 50):
            check = sequential_check(int(sums[n - 1]), n, threshold, confidence=0.95, n_max=horizon)
            if check.settled:
                truth = "pass" if p >= threshold else "fail"
                wrong += check.decision != truth
                break
    assert wrong / 300 <= 0.05


def _workspace(
    tmp_path: Path,
    digits_weights: Path,
    name: str,
    *,
    min_clean: float,
    min_robust: float,
    sequential: bool,
) -> Path:
    config = write_workspace(
        tmp_path / name, digits_weights, min_clean=min_clean, min_robust=min_robust, max_samples=450
    )
    mode = str(sequential).lower()
    text = config.read_text() + f"\n[scan]\nbatch_size = 30\nsequential = {mode}\n"
    config.write_text(text)
    return config


@pytest.mark.parametrize(
    ("min_clean", "min_robust", "label"), [(0.5, 0.9, "far"), (0.9, 0.25, "near")]
)
def test_early_stop_agrees_with_full_evaluation(
    tmp_path: Path, digits_weights: Path, min_clean: float, min_robust: float, label: str
):
    full_cfg = _workspace(
        tmp_path,
        digits_weights,
        f"{label}-full",
        min_clean=min_clean,
        min_robust=min_robust,
        sequential=False,
    )
    seq_cfg = _workspace(
        tmp_path,
        digits_weights,
        f"{label}-seq",
        min_clean=min_clean,
        min_robust=min_robust,
        sequential=True,
    )
    full = workflow.scan(workflow.Workspace.open(full_cfg))
    seq = workflow.scan(workflow.Workspace.open(seq_cfg))
    assert full.n == 450 and full.stop_reason == "complete"
    for f_check, s_check in zip(full.checks, seq.checks, strict=True):
        assert s_check.decision in (f_check.decision, "undecided")
    if label == "far":
        # Far from the thresholds both decisions settle long before the data runs out.
        assert seq.stop_reason == "settled" and seq.n < full.n / 2
        assert [c.decision for c in seq.checks] == [c.decision for c in full.checks]
    # The gate reports how many samples each decision needed.
    decision = workflow.gate(workflow.Workspace.open(seq_cfg))
    for check in decision.checks:
        info = check.as_dict()
        assert info["n"] == seq.n and info["mode"] == "sequential"
        assert info["settled"] == (info["decision"] != "undecided")


def test_undecided_maps_through_policy(tmp_path: Path, digits_weights: Path):
    # Thresholds within the 30-sample interval of the measured values (about 0.9 and 0.67).
    config = _workspace(
        tmp_path, digits_weights, "undecided", min_clean=0.9, min_robust=0.7, sequential=True
    )
    ws = workflow.Workspace.open(config)
    result = workflow.scan(ws, max_samples=30)  # far too few samples to settle anything
    assert result.stop_reason == "sample budget" and result.n == 30
    assert {c.decision for c in result.checks} == {"undecided"}
    assert not any(c.passed for c in result.checks)  # scan.undecided defaults to "fail"
    config.write_text(config.read_text() + 'undecided = "pass"\n')
    ws = workflow.Workspace.open(config)
    assert all(c.passed for c in workflow.scan(ws, max_samples=30).checks)
