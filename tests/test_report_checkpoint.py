"""Every gate report carries the signed checkpoint of the chain it decided on, so CI artifacts
hold copies outside the ledger: each one (gate-report.json, SARIF, JUnit) is accepted by
`hardenml ledger verify --checkpoint`, and catches the rewrite of issue 15. Without a key,
the reports say so and what that leaves undetectable."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hardenml.cli import app
from hardenml.ledger import Ledger
from hardenml.ledger.checkpoint import generate_key
from test_ledger_checkpoint import rewrite
from test_reports import validate_sarif
from workspace import write_workspace

runner = CliRunner()


def run(*args: str, key: Path | None = None):
    env = {"HARDENML_LEDGER_KEY": "" if key is None else str(key)}
    return runner.invoke(app, list(args), catch_exceptions=False, env=env)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    private, _public = generate_key(tmp_path / "keys" / "ledger.key")
    return private


def report_files(config: Path) -> dict[str, Path]:
    reports = config.parent / "reports"
    return {
        "json": config.parent / "gate-report.json",
        "sarif": reports / "report.sarif",
        "junit": reports / "report.xml",
    }


def junit_properties(path: Path) -> dict[str, str]:
    root = ET.fromstring(path.read_text())
    return {p.get("name", ""): p.get("value", "") for p in root.iter("property")}


@pytest.mark.slow
def test_every_report_carries_the_checkpoint_and_catches_the_rewrite(
    tmp_path: Path, digits_weights: Path, key_file: Path
) -> None:
    cfg = write_workspace(tmp_path / "ws", digits_weights, min_clean=0.8, min_robust=0.9)
    gated = run("gate", "--config", str(cfg), key=key_file)
    assert gated.exit_code == 1, gated.output  # the robust threshold fails: a finding opens
    files = report_files(cfg)
    gate_report = json.loads(files["json"].read_text())
    signed = gate_report["ledger_checkpoint"]
    assert signed["tree_size"] == gate_report["ledger"]["events"]
    assert signed["chain_head"] == gate_report["ledger"]["head_hash"]
    assert "signed checkpoint" in gate_report["ledger_anchor"]
    sarif = json.loads(files["sarif"].read_text())
    validate_sarif(sarif)
    assert sarif["runs"][0]["properties"]["ledger_checkpoint"] == signed
    assert json.loads(junit_properties(files["junit"])["ledger_checkpoint"]) == signed

    public = f"{key_file}.pub"
    for name, path in files.items():
        ok = run(
            "ledger", "verify", "--config", str(cfg), "--checkpoint", str(path), "--key", public
        )
        assert ok.exit_code == 0, (name, ok.output)
        assert "extend the signed checkpoint" in ok.output

    db = cfg.parent / "hardenml.db"
    opened = next(e for e in Ledger(db).events() if e.kind == "finding.opened")
    rewrite(db, opened.seq, lambda p: {**p, "severity": "low"})
    assert run("ledger", "verify", "--config", str(cfg)).exit_code == 0  # the chain alone: fooled
    for name, path in files.items():
        # Copied out of the workspace first, as a CI artifact store would hold it.
        kept = tmp_path / "artifacts" / f"{name}-{path.name}"
        kept.parent.mkdir(exist_ok=True)
        kept.write_bytes(path.read_bytes())
        caught = run(
            "ledger", "verify", "--config", str(cfg), "--checkpoint", str(kept), "--key", public
        )
        assert caught.exit_code == 1, (name, caught.output)
        assert f"event #{opened.seq} ({opened.event_id})" in caught.output, name


@pytest.mark.slow
def test_without_a_key_the_reports_say_what_cannot_be_detected(
    tmp_path: Path, digits_weights: Path, key_file: Path
) -> None:
    cfg = write_workspace(tmp_path / "ws", digits_weights, min_clean=0.8, min_robust=0.0)
    assert run("gate", "--config", str(cfg)).exit_code == 0
    files = report_files(cfg)
    gate_report = json.loads(files["json"].read_text())
    assert gate_report["ledger_checkpoint"] is None
    sarif_props = json.loads(files["sarif"].read_text())["runs"][0]["properties"]
    junit_props = junit_properties(files["junit"])
    assert "ledger_checkpoint" not in junit_props
    for said in (
        gate_report["ledger_anchor"],
        sarif_props["ledger_anchor"],
        junit_props["ledger_anchor"],
    ):
        assert said.startswith("no ledger checkpoint was signed")
        assert "recompute every hash" in said
    for path in files.values():
        refused = run(
            "ledger",
            "verify",
            "--config",
            str(cfg),
            "--checkpoint",
            str(path),
            "--key",
            str(key_file),
        )
        assert refused.exit_code == 2 and "ran without" in " ".join(refused.output.split())


def test_a_key_that_does_not_load_stops_the_gate_before_it_scans(
    tmp_path: Path, digits_weights: Path
) -> None:
    cfg = write_workspace(tmp_path / "ws", digits_weights)
    refused = run("gate", "--config", str(cfg), key=tmp_path / "missing.key")
    assert refused.exit_code == 2
    assert "missing.key does not exist" in " ".join(refused.output.split())
    assert not [e for e in Ledger(cfg.parent / "hardenml.db").events() if e.kind == "run.completed"]
