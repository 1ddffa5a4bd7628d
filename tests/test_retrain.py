"""`hardenml retrain` on the digits MLP: the released model fine-tuned on clean data, fresh
PGD examples and the replay buffer, held near its weights by L2-SP. The replayed examples
are classified better afterwards, clean accuracy stays within the policy margin, and the
candidate is only a candidate: the config still points at the released model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.test_held_out import CONFIG as HELD_OUT_CONFIG
from tests.workspace import digits_workspace
from typer.testing import CliRunner

from hardenml.cli import app
from hardenml.continuous import rows_from_flagged, update_replay
from hardenml.ledger import Ledger
from hardenml.targets import file_sha256
from hardenml.workflow import Workspace

runner = CliRunner()

CONFIG = HELD_OUT_CONFIG + "\n[retrain]\nl2sp = 0.01\nepochs = 3\n"


@pytest.fixture
def workspace(tmp_path: Path, digits_weights: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return digits_workspace(tmp_path, digits_weights, CONFIG)


def run(*args: str) -> object:
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.mark.slow
def test_retrain_learns_the_replay_keeps_clean_accuracy_and_never_promotes(
    workspace: Path,
) -> None:
    ledger = Ledger(workspace / "hardenml.db")
    released_sha = file_sha256(workspace / "model.safetensors")
    assert run("scan").exit_code == 0
    assert run("release", "--force").exit_code == 0
    assert run("replay", "add").exit_code == 0
    replay = ledger.events(["replay.updated"])[-1].payload
    config_before = (workspace / "hardenml.toml").read_text()

    result = run("retrain")
    assert result.exit_code == 0, result.output
    assert "hardenml validate" in result.output and "never promotes" in result.output
    assert "held-out threats, not trained on: square" in result.output
    event = ledger.events(["model.patched"])[-1]
    p = event.payload
    assert p["patch"] == "l2sp_finetune" and p["parent_sha256"] == released_sha
    assert p["params"]["replay_sha256"] == replay["sha256"] and p["params"]["l2sp"] == 0.01
    # The lineage names the buffer as its own event does: relative to the workspace.
    assert p["params"]["replay"] == replay["path"] and not Path(replay["path"]).is_absolute()
    assert p["params"]["eps"] == 0.1  # the held-out requirement's 0.3 is never trained at
    accuracy = p["metrics"]["replay_accuracy"]
    assert p["metrics"]["replay_n"] == replay["size"]
    assert accuracy["before"] < 0.5 < accuracy["after"], accuracy
    assert (workspace / "hardenml.toml").read_text() == config_before

    checked = run("validate", "released", p["artifact"], "--json")
    verdict = json.loads(checked.stdout)
    clean = next(c for c in verdict["checks"] if c["name"].startswith("clean_accuracy"))
    assert clean["passed"], clean["reason"]
    # The evaluation rows the buffer's examples were crafted from are left out of both.
    excluded = verdict["replay_excluded"]
    with np.load(workspace / replay["path"], allow_pickle=False) as npz:
        replayed = set(npz["source_id"])
    assert excluded["rows"] == len(replayed) > 0 and excluded["buffers"] == [replay["sha256"]]
    assert verdict["n"] == excluded["of"] - excluded["rows"]


@pytest.mark.slow
def test_l2sp_holds_the_weights_nearer_the_released_ones(workspace: Path) -> None:
    assert run("scan").exit_code == 0
    assert run("replay", "add").exit_code == 0
    distances = {}
    for strength in (0.0, 1.0):
        text = CONFIG.replace("l2sp = 0.01", f"l2sp = {strength}")
        (workspace / "hardenml.toml").write_text(text)
        assert run("retrain").exit_code == 0
        p = Ledger(workspace / "hardenml.db").events(["model.patched"])[-1].payload
        distances[strength] = p["metrics"]["l2sp_distance"]
    assert distances[1.0] < distances[0.0]


def test_retrain_refuses_a_replay_file_that_changed(workspace: Path) -> None:

    ws = Workspace.open(workspace / "hardenml.toml")
    rows = rows_from_flagged(np.zeros((5, 64)), np.zeros(5, dtype=np.int64), source="monitor")
    version, _ = update_replay(ws.config, ws.ledger, rows)
    (workspace / version.record.path).write_bytes(b"changed")
    result = runner.invoke(app, ["retrain"])
    assert result.exit_code == 2 and "changed since ledger event" in result.output
