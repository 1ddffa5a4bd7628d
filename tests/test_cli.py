"""End to end through the `hardenml` command, in temporary folders, on a real model."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from safetensors.torch import save_file
from typer.testing import CliRunner

from hardenml.cli import app
from hardenml.ledger import Ledger
from workspace import nan_model, write_workspace

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def failing_ws(tmp_path: Path, digits_weights: Path) -> Path:
    """A workspace whose policy demands more robustness than the model has."""
    return write_workspace(tmp_path / "ws", digits_weights, min_clean=0.8, min_robust=0.9)


def test_init_writes_a_starter_and_refuses_to_overwrite(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run("init").exit_code == 0
    assert "[[threats]]" in (tmp_path / "hardenml.toml").read_text()
    again = run("init")
    assert again.exit_code == 2 and "--force" in again.output
    assert run("init", "--force").exit_code == 0


def test_scan_findings_gate_and_verify(failing_ws: Path, monkeypatch):
    monkeypatch.chdir(failing_ws.parent)  # every command finds ./hardenml.toml
    scan = run("scan")
    assert scan.exit_code == 0, scan.output
    assert "robust_accuracy[pgd-linf@0.1]" in scan.output and "clean_accuracy" in scan.output

    listed = run("findings", "list", "--json")
    findings = json.loads(listed.output)
    assert len(findings) == 1
    finding = findings[0]
    assert finding["threat"] == "pgd-linf" and finding["owner"] == "robustness-team"
    assert finding["severity"] in ("critical", "high") and finding["status"] == "open"
    evidence = failing_ws.parent / finding["evidence"][0]["path"]
    assert evidence.is_file()

    shown = run("findings", "show", finding["finding_id"])
    assert shown.exit_code == 0
    assert "remediation" in shown.output and "finding.opened" in shown.output

    gate = run("gate")
    assert gate.exit_code == 1, gate.output
    assert "GATE FAILED" in gate.output and "FAIL" in gate.output
    report = json.loads((failing_ws.parent / "gate-report.json").read_text())
    assert report["decision"]["status"] == "fail" and report["decision"]["exit_code"] == 1
    assert report["schema_version"] == "1.3"
    failed = [c for c in report["checks"] if not c["passed"]]
    assert [c["name"] for c in failed] == ["robust_accuracy[pgd-linf@0.1]"]
    assert report["blocking_findings"][0]["finding_id"] == finding["finding_id"]

    verify = run("ledger", "verify")
    assert verify.exit_code == 0 and "ledger ok" in verify.output
    events = Ledger(failing_ws.parent / "hardenml.db").events()
    # The gate reused the scan's run instead of scanning again.
    assert [e.kind for e in events] == ["run.completed", "finding.opened", "gate.decided"]
    # The report names the verified chain it decided on; the decision is chained after it.
    assert report["ledger"] == {"events": 2, "head_hash": events[1].hash}
    assert events[2].prev_hash == events[1].hash
    assert events[2].payload["ledger_head"] == report["ledger"]


def test_relaxed_policy_and_rescan_fix_the_finding(failing_ws: Path, digits_weights: Path):
    cfg = str(failing_ws)
    assert run("gate", "--config", cfg).exit_code == 1
    write_workspace(failing_ws.parent, digits_weights, min_clean=0.8, min_robust=0.0)
    # Same run, relaxed policy: the open critical finding still blocks the release.
    still = run("gate", "--config", cfg)
    assert still.exit_code == 1 and "blocking" in still.output
    passed = run("gate", "--config", cfg, "--rescan")
    assert passed.exit_code == 0, passed.output
    assert "GATE PASSED" in passed.output
    (finding,) = json.loads(run("findings", "list", "--config", cfg, "--all", "--json").output)
    assert finding["status"] == "fixed"
    assert [h["kind"] for h in finding["history"]] == ["finding.opened", "finding.fixed"]


def test_tampered_ledger_fails_verify_and_names_the_event(failing_ws: Path):
    cfg = str(failing_ws)
    run("scan", "--config", cfg)
    db = failing_ws.parent / "hardenml.db"
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER events_append_only_update")
    conn.execute("UPDATE events SET actor = 'mallory' WHERE seq = 2")
    conn.commit()
    result = run("ledger", "verify", "--config", cfg)
    assert result.exit_code == 1
    assert "TAMPERED" in result.output and "event #2" in result.output


def _ledger_state(folder: Path) -> tuple[int, bool]:
    db = folder / "hardenml.db"
    if not db.exists():
        return (0, True)
    report = Ledger(db).verify()
    return (report.events, report.ok)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("[policy]", "[policy"), "valid TOML"),
        (lambda t: t.replace("seed = 0", "seeed = 0"), "data.seeed"),
        (lambda t: t.replace("max_samples = 120", "max_samples = -3"), "data.max_samples"),
        (
            lambda t: t.replace('path = "model.safetensors"', 'path = "nope.safetensors"'),
            "does not exist",
        ),
        (
            lambda t: t.replace(
                'classes = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]',
                'classes = ["0", "1", "2"]',
            ),
            "model.classes",
        ),
        (lambda t: t.replace('source = "digits"', 'source = "missing.csv"'), "missing.csv"),
        (lambda t: t.replace("shape = [64]", "shape = [3, 5]"), "model.input.shape"),
    ],
    ids=[
        "malformed-toml",
        "unknown-key",
        "wrong-value",
        "missing-weights",
        "output-shape",
        "missing-data",
        "input-shape",
    ],
)
def test_bad_input_exits_2_with_a_message_and_ledger_intact(failing_ws: Path, edit, message):
    cfg = str(failing_ws)
    assert run("scan", "--config", cfg).exit_code == 0
    before = _ledger_state(failing_ws.parent)
    failing_ws.write_text(edit(failing_ws.read_text()))
    for command in (["scan"], ["gate"]):
        result = run(*command, "--config", cfg)
        assert result.exit_code == 2, result.output
        assert message in result.output.replace("\n", " ")
        assert "Traceback" not in result.output
    assert _ledger_state(failing_ws.parent) == before


def test_nan_model_is_explained(tmp_path: Path, digits_weights: Path):
    ws = write_workspace(tmp_path / "nan", digits_weights)
    model = nan_model()
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(ws.parent / "model.safetensors"),
    )
    ws.write_text(
        ws.read_text()
        .replace('factory = "hardenml.zoo:mlp"', 'factory = "workspace:nan_model"')
        .replace(
            "factory_kwargs = { in_features = 64, classes = 10, hidden = 32 }",
            "factory_kwargs = { in_features = 64, classes = 10 }",
        )
    )
    result = run("gate", "--config", str(ws))
    assert result.exit_code == 2
    assert "NaN or infinite outputs" in result.output
    assert _ledger_state(ws.parent) == (0, True)


def test_same_seed_same_numbers(failing_ws: Path):
    from hardenml import workflow

    ws = workflow.Workspace.open(failing_ws)
    first = workflow.scan(ws)
    second = workflow.scan(ws)
    assert [m.as_dict() for m in first.measurements] == [m.as_dict() for m in second.measurements]
    assert first.data_sha256 == second.data_sha256 and first.run_id != second.run_id
    assert first.findings[0].fingerprint == second.findings[0].fingerprint


def test_memory_budget_splits_attacks_without_changing_a_deterministic_scan(
    tmp_path: Path, digits_weights: Path
):
    from hardenml import workflow

    def scan(folder: Path, extra: str):
        config = write_workspace(folder, digits_weights)
        text = config.read_text().replace("steps = 10\n", "steps = 10\nrandom_start = false\n")
        config.write_text(text + extra)
        ws = workflow.Workspace.open(config)
        return ws, workflow.scan(ws)

    _, whole = scan(tmp_path / "a", "")
    # About 1 KB: one sample per chunk for this 64-feature MLP.
    ws, split = scan(tmp_path / "b", "\n[scan]\nmemory_mb = 0.001\n")
    assert ws.load_target().memory_budget == int(0.001 * 2**20)
    assert [m.as_dict() for m in split.measurements] == [m.as_dict() for m in whole.measurements]


def test_gate_says_why_it_scans_and_reports_a_policy_looser_than_the_release(
    tmp_path: Path, digits_weights: Path
) -> None:
    from hardenml.ledger import Ledger

    ws = tmp_path / "ws"
    cfg = str(write_workspace(ws, digits_weights, min_clean=0.5, min_robust=0.0))
    first = run("gate", "--config", cfg)
    assert first.exit_code == 0, first.output
    assert "scanning now, because the ledger records no scan yet" in " ".join(first.output.split())
    assert run("release", "--config", cfg).exit_code == 0
    # The same policy again: nothing loosened, nothing said.
    same = run("gate", "--config", cfg)
    assert "looser" not in same.output and "scanning now" not in same.output
    # Loosen the clean-accuracy floor (0.5 -> 0.3): the gate still passes, says so, and the
    # ledger records it once however often the gate runs.
    write_workspace(ws, digits_weights, min_clean=0.3, min_robust=0.0)
    for _ in range(2):
        loose = run("gate", "--config", cfg)
        assert loose.exit_code == 0, loose.output
        flat = " ".join(loose.output.split())
        assert "looser than at the last release" in flat
        assert "min_clean_accuracy 0.5 -> 0.3" in flat
    events = Ledger(ws / "hardenml.db").events(["policy.loosened"])
    assert len(events) == 1 and events[0].payload["changes"] == ["min_clean_accuracy 0.5 -> 0.3"]
