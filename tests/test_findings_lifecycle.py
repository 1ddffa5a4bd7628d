"""Findings: stable identity across runs, review trail, expiring risk, overdue escalation."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hardenml import workflow
from hardenml.cli import app
from hardenml.ledger import (
    ReviewError,
    escalate_overdue,
    findings_state,
    overdue_findings,
    review,
)
from workspace import write_workspace

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def scanned(tmp_path: Path, digits_weights: Path) -> tuple[Path, str]:
    config = write_workspace(tmp_path / "ws", digits_weights, min_robust=0.9, max_samples=60)
    workflow.scan(workflow.Workspace.open(config))
    (finding,) = json.loads(cli("findings", "list", "--config", str(config), "--json").output)
    return config, finding["finding_id"]


def test_same_vulnerability_in_two_runs_is_one_finding(scanned):
    config, fid = scanned
    ws = workflow.Workspace.open(config)
    workflow.scan(ws)
    state = findings_state(ws.ledger.events())
    assert list(state) == [fid]
    assert [h["kind"] for h in state[fid].history] == ["finding.opened", "finding.observed"]
    assert state[fid].severity == "critical"
    assert state[fid].due == (date.today() + timedelta(days=7)).isoformat()


def test_review_commands_leave_a_trail(scanned):
    config, fid = scanned
    c = str(config)
    assert (
        cli(
            "findings",
            "assign",
            fid,
            "--to",
            "alice",
            "--by",
            "bob",
            "--reason",
            "owns PGD",
            "--config",
            c,
        ).exit_code
        == 0
    )
    until = (date.today() + timedelta(days=30)).isoformat()
    accepted = cli(
        "findings",
        "accept-risk",
        fid,
        "--until",
        until,
        "--by",
        "carol",
        "--reason",
        "mitigated by rate limits",
        "--config",
        c,
    )
    assert accepted.exit_code == 0, accepted.output
    # Accepted risk does not block the gate's findings rule, and is no longer "open".
    assert json.loads(cli("findings", "list", "--json", "--config", c).output) == []
    ws = workflow.Workspace.open(config)
    finding = findings_state(ws.ledger.events())[fid]
    assert finding.owner == "alice" and finding.status == "accepted"
    assert finding.accepted_until == until
    # Resolving, then reopening, each a ledger event with its actor.
    assert (
        cli(
            "findings", "resolve", fid, "--by", "dave", "--reason", "retrained", "--config", c
        ).exit_code
        == 0
    )
    assert (
        cli(
            "findings", "reopen", fid, "--by", "erin", "--reason", "regressed", "--config", c
        ).exit_code
        == 0
    )
    events = [e for e in ws.ledger.events() if e.kind.startswith("finding.")]
    assert [(e.kind, e.actor) for e in events[-4:]] == [
        ("finding.assigned", "bob"),
        ("finding.risk_accepted", "carol"),
        ("finding.resolved", "dave"),
        ("finding.review_reopened", "erin"),
    ]
    assert findings_state(ws.ledger.events())[fid].status == "reopened"
    assert cli("ledger", "verify", "--config", c).exit_code == 0


def test_invalid_reviews_are_refused(scanned):
    config, fid = scanned
    c = str(config)
    past = cli(
        "findings",
        "accept-risk",
        fid,
        "--until",
        "2001-01-01",
        "--by",
        "x",
        "--reason",
        "y",
        "--config",
        c,
    )
    assert past.exit_code == 2 and "expires" in past.output
    reopen_open = cli("findings", "reopen", fid, "--by", "x", "--reason", "y", "--config", c)
    assert reopen_open.exit_code == 2 and "is open" in reopen_open.output
    missing = cli(
        "findings", "resolve", "HML-00000000", "--by", "x", "--reason", "y", "--config", c
    )
    assert missing.exit_code == 2
    ws = workflow.Workspace.open(config)
    with pytest.raises(ReviewError, match="--by NAME"):
        review(ws.ledger, ws.config, fid, "resolve", by=" ", reason="r")


def test_accepted_risk_expires(scanned):
    config, fid = scanned
    ws = workflow.Workspace.open(config)
    today = date.today()
    review(
        ws.ledger,
        ws.config,
        fid,
        "accept-risk",
        by="a",
        reason="r",
        until=today + timedelta(days=3),
    )
    finding = findings_state(ws.ledger.events())[fid]
    assert finding.status_on(today) == "accepted"
    assert finding.status_on(today + timedelta(days=4)) == "open"


def test_overdue_as_of_previews_and_escalation_happens_once(scanned):
    config, fid = scanned
    c = str(config)
    ws = workflow.Workspace.open(config)
    before = ws.ledger.verify().head
    assert cli("findings", "overdue", "--config", c).exit_code == 0  # due in 7 days
    later = date.today() + timedelta(days=10)
    for _ in range(2):
        result = cli("findings", "overdue", "--as-of", later.isoformat(), "--config", c)
        assert result.exit_code == 1
        assert fid in result.output and "release-manager" in result.output
        assert "nothing recorded" in result.output
    # A what-if query about a date that has not come leaves the audit trail as it was.
    assert ws.ledger.verify().head == before
    assert [f.finding_id for f in overdue_findings(ws.ledger.events(), today=later)] == [fid]
    # Escalating (on a clock that reads `later`) records it, once per due date.
    escalate_overdue(ws.ledger, ws.config, today=later)
    escalate_overdue(ws.ledger, ws.config, today=later)
    escalations = [e for e in ws.ledger.events() if e.kind == "finding.escalated"]
    assert len(escalations) == 1 and escalations[0].payload["days_overdue"] == 3
    # Accepting the risk takes it off the overdue list until the acceptance expires.
    review(
        ws.ledger,
        ws.config,
        fid,
        "accept-risk",
        by="a",
        reason="r",
        until=date.today() + timedelta(days=20),
    )
    assert escalate_overdue(ws.ledger, ws.config, today=later) == []


def _set_min_robust(config: Path, value: float) -> None:
    text = config.read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("min_accuracy = "))
    config.write_text(text.replace(line, f"min_accuracy = {value}"))


def test_a_reopened_finding_takes_the_new_threshold(scanned):
    """Opened at 0.9, fixed when the policy drops to 0.0, reopened at 0.8: the title, the
    threshold and every report say 0.8, never the 0.9 it was first opened with."""
    config, fid = scanned
    ws = workflow.Workspace.open(config)
    assert findings_state(ws.ledger.events())[fid].threshold == 0.9
    _set_min_robust(config, 0.0)
    workflow.scan(workflow.Workspace.open(config))
    assert findings_state(ws.ledger.events())[fid].status == "fixed"
    _set_min_robust(config, 0.8)
    ws = workflow.Workspace.open(config)
    decision = workflow.gate(ws, rescan=True)
    finding = findings_state(ws.ledger.events())[fid]
    assert finding.status == "reopened"
    assert finding.threshold == 0.8 and "below the policy's 80.0%" in finding.title
    assert [h["threshold"] for h in finding.history if "threshold" in h] == [0.9, 0.8]
    shown = json.loads(cli("findings", "show", fid, "--json", "--config", str(config)).output)
    assert shown["threshold"] == 0.8 and shown["title"] == finding.title
    reports = ws.config.reports_dir
    sarif = json.loads((reports / "report.sarif").read_text())
    (result,) = [r for r in sarif["runs"][0]["results"] if r["properties"].get("finding_id") == fid]
    assert result["properties"]["threshold"] == 0.8
    html = (reports / "report.html").read_text()
    row = html[html.index(f'<tr data-finding-id="{fid}">') :]
    assert '<td class="num">0.800</td>' in row[: row.index("</tr>")]
    assert not decision.passed


def test_an_observed_finding_takes_the_new_threshold(scanned):
    config, fid = scanned
    _set_min_robust(config, 0.85)
    ws = workflow.Workspace.open(config)
    workflow.scan(ws)
    finding = findings_state(ws.ledger.events())[fid]
    assert finding.status == "open" and finding.history[-1]["kind"] == "finding.observed"
    assert finding.threshold == 0.85 and "below the policy's 85.0%" in finding.title


def test_findings_as_of_a_run_leave_out_later_scans_but_keep_reviews(tmp_path: Path) -> None:
    """A gate on run r1 describes r1's findings: what a later scan of another file of the
    same name observed or fixed is left out, while a review made since still counts."""
    from hardenml.ledger import Ledger
    from hardenml.records import RUN_COMPLETED

    ledger = Ledger(tmp_path / "hardenml.db")
    opened = {
        "finding_id": "HML-aaaaaaaa", "fingerprint": "a" * 16, "title": "robust 40%",
        "model": "m", "threat": "pgd", "metric": "robust_accuracy", "budget": 0.1,
        "severity": "high", "value": 0.4, "threshold": 0.9, "ci": [0.3, 0.5], "n": 100,
        "owner": "ml", "exploitation": "", "remediation": "", "evidence": [], "due": "2027-01-01",
    }  # fmt: skip
    ledger.append(RUN_COMPLETED, {"run_id": "r1", "model": "m"})
    ledger.append("finding.opened", {**opened, "run_id": "r1"})
    ledger.append(RUN_COMPLETED, {"run_id": "r2", "model": "m"})
    later = {**opened, "run_id": "r2", "value": 0.1, "title": "robust 10%", "ci": [0.05, 0.2]}
    ledger.append("finding.observed", later)
    ledger.append("finding.assigned", {"finding_id": "HML-aaaaaaaa", "owner": "sec"})
    ledger.append("finding.fixed", {"finding_id": "HML-aaaaaaaa", "run_id": "r3", "value": 0.95})
    events = ledger.events()

    (latest,) = findings_state(events).values()
    assert (latest.value, latest.status, latest.owner) == (0.1, "fixed", "sec")
    (as_of,) = findings_state(events, as_of_run="r1").values()
    assert (as_of.value, as_of.title, as_of.ci) == (0.4, "robust 40%", (0.3, 0.5))
    assert (as_of.status, as_of.owner) == ("open", "sec")
    (second,) = findings_state(events, as_of_run="r2").values()
    assert (second.value, second.status) == (0.1, "open")
