"""Held-out threats: no patch trains on them, and `validate` reports them on their own.

A PGD-trained digits MLP is checked on a held-out Square attack (a score-based attack it
never saw): the verdict carries it in its `held_out` section and the text output in its
own block; a candidate that regresses on the held-out threat alone fails validation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.workspace import digits_workspace
from typer.testing import CliRunner

from hardenml.cli import app
from hardenml.config import HardenConfig
from hardenml.ledger import Ledger
from hardenml.patch import PatchError, TrainingAttack, make_patch, policy_attacks
from hardenml.threats import validate_threats
from hardenml.validate import Outcomes, compare
from hardenml.workflow import Workspace, _training_budget
from workspace import digits_head

runner = CliRunner()

CONFIG = (
    digits_head("held-out", max_samples=200)
    + """

[[threats]]
name = "pgd-linf"
attack = "pgd"
budgets = [0.1]
steps = 10

[[threats]]
name = "square"
attack = "square"
budgets = [0.1, 0.3]
queries = 60
held_out = true

[policy]
clean_margin = 0.03
ece_margin = 0.05

[[policy.robust]]
threat = "pgd-linf"
budget = 0.1
min_accuracy = 0.58

[[policy.robust]]
threat = "square"
budget = 0.3
min_accuracy = 0.5
"""
)


@pytest.fixture
def workspace(tmp_path: Path, digits_weights: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return digits_workspace(tmp_path, digits_weights, CONFIG)


def test_patches_never_train_on_held_out_threats(workspace: Path) -> None:
    config = Workspace.open(workspace / "hardenml.toml").config
    assert config.held_out_threats == ["square"]
    attacks = policy_attacks(config, validate_threats(config))
    assert [(a.name, a.budget) for a in attacks] == [("pgd-linf", 0.1)]
    # The held-out requirement at 0.3 is the largest L-inf budget, yet eps comes from 0.1.
    assert _training_budget(config) == 0.1


def test_a_patch_handed_a_held_out_threat_refuses(workspace: Path) -> None:
    ws = Workspace.open(workspace / "hardenml.toml")
    train, _ = ws.datasets()
    threats = validate_threats(ws.config)
    square = TrainingAttack("square", threats["square"], 0.1)
    with pytest.raises(PatchError, match="held-out threats"):
        make_patch("pgd_at", {"eps": 0.1, "epochs": 1})(
            ws.load_target(),
            ws.config.model,
            train,
            attacks=[square],
            held_out=["square"],
        )


@pytest.mark.slow
def test_a_pgd_patch_is_caught_on_a_held_out_square_threat(workspace: Path) -> None:
    patched = runner.invoke(
        app,
        ["patch", "--with", "pgd_at", "--set", "epochs=3", "--set", "steps=5"],
        catch_exceptions=False,
    )
    assert patched.exit_code == 0, patched.output
    assert "held-out threats, not trained on: square" in patched.output
    (event,) = Ledger(workspace / "hardenml.db").events(["model.patched"])
    assert event.payload["held_out"] == ["square"]
    assert event.payload["params"]["eps"] == 0.1
    artifact = event.payload["artifact"]

    checked = runner.invoke(
        app, ["validate", "model.safetensors", artifact, "--json"], catch_exceptions=False
    )
    verdict = json.loads(checked.stdout)
    held = {c["name"]: c for c in verdict["held_out"]["checks"]}
    assert verdict["held_out"]["threats"] == ["square"]
    assert not any("square" in c["name"] for c in verdict["checks"])
    # The patch learned PGD: every ordinary check passes, it holds against Square at 0.1,
    # but it does not lift Square at 0.3 to the policy's level, so the validation fails.
    assert all(c["passed"] for c in verdict["checks"]), verdict["checks"]
    assert held["robust_accuracy[square@0.1] non-inferiority"]["passed"]
    assert not held["robust_accuracy[square@0.3] improvement"]["passed"]
    assert not verdict["passed"] and checked.exit_code == 1

    text = runner.invoke(app, ["validate", "model.safetensors", artifact])
    assert "held-out threats (never trained on): square" in text.output
    assert "CANDIDATE FAILS" in text.output


def _outcomes(clean: np.ndarray, pgd: np.ndarray, square: np.ndarray) -> Outcomes:
    probs = np.full((len(clean), 10), 0.01)
    probs[np.arange(len(clean)), np.where(clean, 0, 1)] = 0.91
    return Outcomes(
        clean=clean,
        probs=probs,
        robust={"pgd-linf@0.1": pgd, "square@0.1": square, "square@0.3": square},
    )


def test_a_regression_on_a_held_out_threat_alone_fails_validation(workspace: Path) -> None:
    config: HardenConfig = Workspace.open(workspace / "hardenml.toml").config
    n = 200
    y = np.zeros(n, dtype=np.int64)
    clean = np.ones(n, dtype=bool)
    pgd = np.arange(n) < 150  # 0.75: meets its requirement, unchanged
    before, after = np.arange(n) < 160, np.arange(n) < 100  # square: 0.80 -> 0.50
    base = _outcomes(clean, pgd, before)
    cand = _outcomes(clean, pgd, after)
    verdict = compare(config, base, cand, y, seed=0, samples=500)
    assert all(c.passed for c in verdict.checks)
    assert [c.passed for c in verdict.held_out] == [False, False]
    assert not verdict.passed
    assert any(r.startswith("robust_accuracy[square@0.1] non-inferiority") for r in verdict.reasons)
    same = compare(config, base, base, y, seed=0, samples=500)
    assert same.passed and same.as_dict()["held_out"]["passed"]
