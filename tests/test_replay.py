"""The replay buffer: weighted reservoir sampling (A-Res) and its versions in the ledger,
filled from a real scan's evidence and from flagged inputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from tests.test_held_out import CONFIG as HELD_OUT_CONFIG
from tests.workspace import digits_workspace
from typer.testing import CliRunner

from hardenml.cli import app
from hardenml.continuous import ReplayError, ReplayRows, reservoir, rows_from_flagged
from hardenml.continuous.replay import ROW_ARRAYS, row_ids, update_replay
from hardenml.continuous.retrain import replayed_source_ids
from hardenml.ledger import Ledger
from hardenml.records import MODEL_PATCHED
from hardenml.workflow import Workspace, without_replayed

runner = CliRunner()

CONFIG = HELD_OUT_CONFIG + "\n[replay]\ncapacity = 40\nseed = 3\n"


def _rows(n: int, *, severity: str, day: float, start: int = 0) -> ReplayRows:
    x = np.arange(start, start + n, dtype=np.float32)[:, None].repeat(4, axis=1)
    return rows_from_flagged(
        x, np.zeros(n, dtype=np.int64), source=severity, severity=severity, day=day
    )


def test_the_reservoir_is_bounded_seeded_and_weighted_by_severity() -> None:
    held = ReplayRows.empty((4,))
    offered = _rows(500, severity="critical", day=0.0).concat(
        _rows(500, severity="low", day=0.0, start=500)
    )
    kept, new = reservoir(held, offered, capacity=100, half_life_days=30.0, seed=0)
    again, _ = reservoir(held, offered, capacity=100, half_life_days=30.0, seed=0)
    other, _ = reservoir(held, offered, capacity=100, half_life_days=30.0, seed=1)
    assert len(kept) == 100 and new == 100
    assert np.array_equal(kept.x, again.x) and not np.array_equal(kept.x, other.x)
    # Weights 8 against 1: A-Res keeps about 8 critical rows for every low one (exactly,
    # the share of critical rows in the sample exceeds 0.8 at this size).
    assert kept.counts()["critical"] > 80
    assert np.all(np.diff(kept.x[:, 0]) > 0)  # arrival order kept


def test_newer_rows_outweigh_older_ones_of_the_same_severity() -> None:
    old, _ = reservoir(
        ReplayRows.empty((4,)),
        _rows(100, severity="high", day=20000.0),
        capacity=100,
        half_life_days=10.0,
        seed=0,
    )
    # Ninety days later (nine half-lives) the fresh rows weigh 512 times as much.
    kept, new = reservoir(
        old,
        _rows(100, severity="high", day=20090.0, start=100),
        capacity=100,
        half_life_days=10.0,
        seed=0,
    )
    assert new > 95 and len(kept) == 100


def test_flagged_inputs_need_matching_labels_and_a_known_severity() -> None:
    with pytest.raises(ReplayError, match="labels"):
        rows_from_flagged(np.zeros((3, 4)), np.zeros(2), source="monitor")
    with pytest.raises(ReplayError, match="severity"):
        rows_from_flagged(np.zeros((2, 4)), np.zeros(2), source="monitor", severity="urgent")


@pytest.fixture
def workspace(tmp_path: Path, digits_weights: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return digits_workspace(tmp_path, digits_weights, CONFIG)


@pytest.mark.slow
def test_replay_from_scan_evidence_and_flagged_inputs(workspace: Path) -> None:
    scanned = runner.invoke(app, ["scan"], catch_exceptions=False)
    assert scanned.exit_code == 0, scanned.output
    ledger = Ledger(workspace / "hardenml.db")
    assert runner.invoke(app, ["replay", "show"]).exit_code == 2  # nothing yet

    added = runner.invoke(app, ["replay", "add"], catch_exceptions=False)
    assert added.exit_code == 0, added.output
    (event,) = ledger.events(["replay.updated"])
    p = event.payload
    assert p["version"] == 1 and p["parent_sha256"] is None and p["ingested"]
    blob = (workspace / p["path"]).read_bytes()
    assert hashlib.sha256(blob).hexdigest() == p["sha256"] and p["sha256"][:12] in p["path"]
    assert 0 < p["size"] <= 40 and p["sources"] == {"scan": p["size"]}
    with np.load(workspace / p["path"], allow_pickle=False) as npz:
        assert npz["x"].shape[1:] == (64,) and set(npz["severity"]) <= {
            "critical",
            "high",
            "medium",
            "low",
        }
        assert all(o.startswith("HML-") for o in npz["origin"])
        source_ids = set(npz["source_id"])
    # Each row names the evaluation row its adversarial example was crafted from.
    evaluation = set(row_ids(Workspace.open(workspace / "hardenml.toml").evaluation_data().x))
    assert source_ids and source_ids <= evaluation

    again = runner.invoke(app, ["replay", "add"], catch_exceptions=False)
    assert again.exit_code == 0 and "no new adversarial examples" in again.output
    assert len(ledger.events(["replay.updated"])) == 1

    flagged = workspace / "flagged.npz"
    rng = np.random.default_rng(0)
    np.savez(flagged, x=rng.random((30, 64)).astype(np.float32), y=rng.integers(0, 10, 30))
    grown = runner.invoke(
        app,
        ["replay", "add", "--flagged", str(flagged), "--source", "monitor:test"],
        catch_exceptions=False,
    )
    assert grown.exit_code == 0, grown.output
    second = ledger.events(["replay.updated"])[-1].payload
    assert second["version"] == 2 and second["parent_sha256"] == p["sha256"]
    assert second["size"] == min(40, p["size"] + 30) and second["offered"] == 30
    assert set(second["sources"]) <= {"scan", "monitor:test"}
    shown = json.loads(runner.invoke(app, ["replay", "show", "--json"]).stdout)
    assert shown["version"] == 2 and sum(shown["sources"].values()) == second["size"]

    wrong = workspace / "wrong.npz"
    np.savez(wrong, x=np.zeros((2, 8)), y=np.zeros(2))
    refused = runner.invoke(app, ["replay", "add", "--flagged", str(wrong)])
    assert refused.exit_code == 2 and "model.input.shape" in refused.output

    (workspace / second["path"]).write_bytes(b"changed")
    tampered = runner.invoke(app, ["replay", "show"])
    assert tampered.exit_code == 2 and "changed since ledger event" in tampered.output
    assert ledger.verify().ok


def test_validation_leaves_out_the_evaluation_rows_a_lineage_replayed(workspace: Path) -> None:
    ws = Workspace.open(workspace / "hardenml.toml")
    data = ws.evaluation_data()
    # Ten evaluation rows reach the buffer (as a finding's evidence would bring them).
    rows = rows_from_flagged(data.x[:10] * 0.5, data.y[:10], source="scan")
    rows = ReplayRows(
        **{**{k: getattr(rows, k) for k in ROW_ARRAYS}, "source_id": row_ids(data.x[:10])}
    )
    version, _ = update_replay(ws.config, ws.ledger, rows)
    # A candidate trained on that buffer, and one fine-tuned from it without replay.
    ws.ledger.append(
        MODEL_PATCHED,
        {
            "artifact_sha256": "a" * 64,
            "parent_sha256": "p" * 64,
            "params": {"replay_sha256": version.record.sha256},
        },
    )
    ws.ledger.append(
        MODEL_PATCHED, {"artifact_sha256": "b" * 64, "parent_sha256": "a" * 64, "params": {}}
    )
    events = ws.ledger.events()
    assert replayed_source_ids(ws.config, events, ["p" * 64]).buffers == ()
    assert replayed_source_ids(ws.config, events, ["b" * 64]).ids == set(row_ids(data.x[:10]))

    kept, excluded = without_replayed(ws, data, events, ["p" * 64, "b" * 64])
    assert excluded == {
        "rows": 10,
        "of": len(data),
        "buffers": [version.record.sha256],
        "replay_rows_without_id": 0,
    }
    assert len(kept) == len(data) - 10 and not set(row_ids(kept.x)) & set(row_ids(data.x[:10]))
    assert without_replayed(ws, data, events, ["p" * 64]) == (data, None)


def test_a_buffer_written_before_rows_carried_ids_still_reads(workspace: Path) -> None:
    ws = Workspace.open(workspace / "hardenml.toml")
    flagged = rows_from_flagged(np.zeros((3, 64)), np.zeros(3, dtype=np.int64), source="monitor")
    version, _ = update_replay(ws.config, ws.ledger, flagged)
    path = workspace / version.record.path
    with np.load(path, allow_pickle=False) as npz:
        old = {k: npz[k] for k in npz.files if k != "source_id"}
    np.savez_compressed(path, **old)
    blob = path.read_bytes()
    ws.ledger.append(
        "replay.updated",
        {**version.record.to_payload(), "sha256": hashlib.sha256(blob).hexdigest(), "version": 2},
    )
    ws.ledger.append(
        MODEL_PATCHED,
        {
            "artifact_sha256": "c" * 64,
            "params": {"replay_sha256": hashlib.sha256(blob).hexdigest()},
        },
    )
    replayed = replayed_source_ids(ws.config, ws.ledger.events(), ["c" * 64])
    assert replayed.ids == frozenset() and replayed.without_id == 3
