"""The loop's second half through the `hardenml` command on a real digits MLP: the gate
fails, PGD-AT patches the model, the validator proves the gain, the gate passes, and the
release is recorded; each step leaves its ledger event."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hardenml.cli import app
from hardenml.ledger import Ledger
from hardenml.targets import file_sha256
from workspace import digits_head

runner = CliRunner()

CONFIG = (
    # A comment in the [model] table: `release` rewrites model.path and must keep it.
    digits_head("patch-loop", max_samples=300).replace(
        'factory = "hardenml.zoo:mlp"',
        'factory = "hardenml.zoo:mlp"   # the MLP of tests/conftest.py',
    )
    + """

[[threats]]
name = "pgd-linf"
attack = "pgd"
budgets = [0.1]
steps = 20
restarts = 2

[policy]
min_clean_accuracy = 0.85
clean_margin = 0.03
ece_margin = 0.05

[[policy.robust]]
threat = "pgd-linf"
budget = 0.1
min_accuracy = 0.58
"""
)


def run(*args: str) -> object:
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def workspace(tmp_path: Path, digits_weights: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "model.safetensors").write_bytes(digits_weights.read_bytes())
    (tmp_path / "hardenml.toml").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_gate_fails_patch_validate_gate_passes_release(workspace: Path) -> None:
    ledger = Ledger(workspace / "hardenml.db")
    parent_sha = file_sha256(workspace / "model.safetensors")
    gate = run("gate")
    assert gate.exit_code == 1, gate.output

    patched = run("patch", "--with", "pgd_at", "--set", "epochs=4", "--set", "steps=5")
    assert patched.exit_code == 0, patched.output
    (event,) = ledger.events(["model.patched"])
    p = event.payload
    artifact = workspace / p["artifact"]
    assert artifact.is_file() and artifact.suffix == ".safetensors"
    assert p["artifact_sha256"] == file_sha256(artifact) != parent_sha
    assert p["parent_sha256"] == parent_sha
    assert p["params"]["eps"] == 0.1  # taken from the failing policy requirement
    assert p["seed"] == 0 and len(p["data_sha256"]) == 64 and p["metrics"]["after"]["pgd"] > 0
    assert p["model"]["factory"] == "hardenml.zoo:mlp"

    # Reversed, the comparison must fail: the old model is no improvement on the new one.
    backwards = run("validate", str(artifact), "model.safetensors")
    assert backwards.exit_code == 1, backwards.output
    assert "CANDIDATE FAILS" in backwards.output

    checked = run("validate", "model.safetensors", str(artifact), "--promote", "--json")
    assert checked.exit_code == 0, checked.output
    verdict = json.loads(checked.stdout)
    assert verdict["passed"] and verdict["candidate_sha256"] == p["artifact_sha256"]
    names = [c["name"] for c in verdict["checks"]]
    assert "robust_accuracy[pgd-linf@0.1] improvement" in names
    mcnemar = next(c for c in verdict["checks"] if c["name"].startswith("robust"))
    assert mcnemar["p_value"] < 0.05 and mcnemar["ci"][0] > 0
    model = tomllib.loads((workspace / "hardenml.toml").read_text())["model"]
    assert model["path"] == p["artifact"]
    assert "# the MLP of tests/conftest.py" in (workspace / "hardenml.toml").read_text()

    gate = run("gate")
    assert gate.exit_code == 0, gate.output
    (decided,) = ledger.events(["gate.decided"])[-1:]
    assert decided.payload["model_sha256"] == p["artifact_sha256"]
    assert {c["name"]: c["passed"] for c in decided.payload["extra_checks"]}["validation"]
    state = {e.payload["finding_id"] for e in ledger.events(["finding.fixed"])}
    assert len(state) == 1  # the robustness finding the patch fixed

    released = run("release")
    assert released.exit_code == 0, released.output
    (rel,) = ledger.events(["model.released"])
    assert rel.payload["model_sha256"] == p["artifact_sha256"]
    assert rel.payload["parent_sha256"] == parent_sha and rel.payload["patch"] == "pgd_at"
    assert not rel.payload["forced"] and rel.payload["measurements"]
    assert ledger.verify().ok

    # The unpatched parent never passed a gate: releasing it is refused.
    refused = run("release", "model.safetensors")
    assert refused.exit_code == 2 and "failing gate decision" in refused.output


def test_user_errors_exit_2(workspace: Path) -> None:
    missing = run("patch")
    assert missing.exit_code == 2 and "--with" in missing.output
    unknown = run("patch", "--with", "pgd_at", "--set", "epsilon=0.1")
    assert unknown.exit_code == 2 and "no parameter" in unknown.output
    no_file = run("validate", "model.safetensors", "nope.safetensors")
    assert no_file.exit_code == 2 and "does not exist" in no_file.output
    listed = run("patch", "--list")
    assert listed.exit_code == 0 and "pgd_at" in listed.output and "trades" in listed.output
