"""Incidents through the command line on a real loop (the digits MLP fails its gate, PGD-AT
patches it, the validator and the gate pass, it is released): every step is a ledger
event, the webhook (a real HTTP server on 127.0.0.1) receives each, and the review lists
every linked event, in chain order, and nothing unlinked."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from typer.testing import CliRunner

from hardenml.cli import app
from hardenml.ledger import Ledger
from hardenml.records import INCIDENT_FAMILIES
from hardenml.report.incident_review import runbook
from test_patch_cli import CONFIG

runner = CliRunner()


def run(*args: str):
    env = {"HARDENML_LEDGER_KEY": "", "HARDENML_INCIDENT_WEBHOOK": ""}
    return runner.invoke(app, list(args), catch_exceptions=False, env=env)


class Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        assert self.headers["Content-Type"] == "application/json"
        Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def webhook() -> Iterator[str]:
    Hook.received = []
    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hooks/incidents"
    server.shutdown()
    server.server_close()


@pytest.fixture
def workspace(tmp_path: Path, digits_weights: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "model.safetensors").write_bytes(digits_weights.read_bytes())
    (tmp_path / "hardenml.toml").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def timeline_seqs(review: str) -> list[int]:
    return [int(m) for m in re.findall(r"^\| (\d+) \|", review, flags=re.M)]


@pytest.mark.slow
def test_the_review_lists_every_linked_event_in_order(workspace: Path, webhook: str) -> None:
    ledger = Ledger(workspace / "hardenml.db")
    assert run("gate").exit_code == 1
    finding_id = ledger.events(["finding.opened"])[0].payload["finding_id"]
    opened = run(
        "incident", "open", "--title", "PGD flips a third of the digits", "--family",
        "attack-campaign", "--severity", "critical", "--finding", finding_id, "--alert",
        "ALERT-7f3a", "--by", "alice", "--summary", "Adversarial inputs from one client.",
        "--notify", webhook,
    )  # fmt: skip
    assert opened.exit_code == 0, opened.output
    assert "opened INC-0001" in opened.output and "notified" in opened.output
    assert Hook.received[0]["kind"] == "incident.opened"
    assert Hook.received[0]["incident_id"] == "INC-0001"
    assert Hook.received[0]["findings"] == [finding_id]
    other = run("incident", "open", "--title", "unrelated", "--family", "drift", "--by", "bob")
    assert other.exit_code == 0 and "INC-0002" in other.output
    ledger.append("monitor.heartbeat", {"alert_id": "ALERT-other"}, actor="monitor")
    ledger.append("alert.raised", {"alert_id": "ALERT-7f3a", "rule": "psi"}, actor="monitor")
    assigned = run(
        "findings", "assign", finding_id, "--to", "robustness-team", "--by", "alice",
        "--reason", "owns adversarial training",
    )  # fmt: skip
    assert assigned.exit_code == 0, assigned.output
    patched = run("patch", "--with", "pgd_at", "--set", "epochs=4", "--set", "steps=5")
    assert patched.exit_code == 0, patched.output
    artifact = ledger.events(["model.patched"])[0].payload["artifact"]
    checked = run("validate", "model.safetensors", artifact, "--promote")
    assert checked.exit_code == 0, checked.output
    assert run("gate").exit_code == 0
    assert run("release").exit_code == 0
    updated = run(
        "incident", "update", "INC-0001", "--note", "patched model released", "--status",
        "mitigated", "--by", "alice", "--notify", webhook,
    )  # fmt: skip
    assert updated.exit_code == 0, updated.output
    closed = run(
        "incident", "close", "INC-0001", "--resolution", "PGD-AT model released", "--by",
        "alice", "--notify", webhook,
    )  # fmt: skip
    assert closed.exit_code == 0, closed.output
    assert [h["kind"] for h in Hook.received] == [
        "incident.opened",
        "incident.updated",
        "incident.closed",
    ]
    run("gate")  # after the close: not part of the incident

    events = ledger.events()
    close_seq = next(e.seq for e in events if e.kind == "incident.closed")
    unrelated = {
        e.seq
        for e in events
        if e.payload.get("incident_id") == "INC-0002" or e.kind == "monitor.heartbeat"
    }
    expected = [e.seq for e in events if e.seq <= close_seq and e.seq not in unrelated]
    review = run("incident", "review", "INC-0001")
    assert review.exit_code == 0, review.output
    assert timeline_seqs(review.stdout) == expected
    kinds = {e.seq: e.kind for e in events}
    stages = {kinds[s] for s in expected}
    assert {"finding.opened", "finding.assigned", "model.patched", "validation.completed"} <= stages
    assert {"gate.decided", "model.released", "alert.raised", "incident.closed"} <= stages
    text = review.stdout
    assert "Adversarial inputs from one client." in text  # the summary given at open
    assert "PGD-AT model released" in text
    for section in ("## Detection", "## Decisions", "## Patch", "## Validation", "## Release"):
        body = text.split(section, 1)[1].split("\n## ", 1)[0]
        assert "- #" in body, f"{section} lists its events"
    # Only what people write: impact, root cause, lessons, action items (the summary was given).
    assert text.count("_To be written by the incident owner") == 4
    shown = json.loads(run("incident", "show", "INC-0001").stdout)
    assert shown["status"] == "closed" and shown["alerts"] == ["ALERT-7f3a"]


def test_incident_commands_refuse_what_the_ledger_does_not_allow(
    workspace: Path, tmp_path: Path
) -> None:
    missing = run(
        "incident", "open", "--title", "t", "--family", "drift", "--by", "a", "-f", "HML-0"
    )
    assert missing.exit_code == 2 and "no finding" in missing.output
    assert run("incident", "open", "--title", "t", "--family", "flood", "--by", "a").exit_code == 2
    unreachable = run(
        "incident", "open", "--title", "t", "--family", "drift", "--by", "a", "--notify",
        "http://127.0.0.1:9/nowhere?token=secret",
    )  # fmt: skip
    assert unreachable.exit_code == 0, unreachable.output
    said = " ".join(unreachable.output.split())
    assert "not notified" in said and "secret" not in said
    assert run("incident", "close", "INC-0001", "--resolution", "r", "--by", "a").exit_code == 0
    again = run("incident", "update", "INC-0001", "--note", "n", "--by", "a")
    assert again.exit_code == 2 and "is closed" in again.output
    assert run("incident", "review", "INC-0009").exit_code == 2


@pytest.mark.parametrize("family", INCIDENT_FAMILIES)
def test_every_family_has_a_runbook(family: str) -> None:
    text = runbook(family)  # type: ignore[arg-type]
    assert text.startswith("# Runbook") and "## Check" in text and "## Act" in text
    shown = run("incident", "runbook", family)
    assert shown.exit_code == 0 and shown.stdout == text
