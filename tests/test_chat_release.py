"""`hardenml release` of a guarded chat model, end to end through the CLI against a real
chat-completions server on 127.0.0.1: scan, gate (fails), patch with a guard, validate
--promote, gate (passes), release. The release names the model as the gate did (the
endpoint's identity and the guard file, hashed together), and later gates evaluate that
released guarded model: no regression against itself, a release of anything ungated or
changed refused with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.test_chat_target import TOKEN, TOKEN_ENV, FaultyChatServer, chat_workspace
from typer.testing import CliRunner

from hardenml.cli import app
from hardenml.ledger import Ledger
from hardenml.patch.chat_guards import read_guards
from hardenml.records import GateDecided, Measurement, ModelReleased
from hardenml.targets import file_sha256
from hardenml.workflow import Workspace

runner = CliRunner()


@pytest.fixture
def server() -> FaultyChatServer:
    with FaultyChatServer() as running:
        yield running


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


def _events(ws: Path, kind: str) -> list:
    return [e for e in Ledger(ws / "hardenml.db").events() if e.kind == kind]


def test_a_guarded_chat_model_is_released_as_gated_and_gated_as_released(
    server: FaultyChatServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reversing "model" repeats every injected marker: every injection probe fails.
    ws = chat_workspace(tmp_path / "ws", server.base_url)
    monkeypatch.chdir(ws)
    assert runner.invoke(app, ["scan"]).exit_code == 0
    assert runner.invoke(app, ["gate"]).exit_code == 1
    bare = runner.invoke(app, ["release"])
    assert bare.exit_code == 2 and "a failing gate decision" in " ".join(bare.output.split())

    assert runner.invoke(app, ["patch", "--with", "chat-input-sanitizer"]).exit_code == 0
    (guards,) = Path("artifacts/models").glob("*chat-input-sanitizer*.guards.json")
    checked = runner.invoke(app, ["validate", "configured", str(guards), "--promote"])
    assert checked.exit_code == 0, checked.output
    gated = runner.invoke(app, ["gate"])
    assert gated.exit_code == 0, gated.output

    released = runner.invoke(app, ["release"])
    assert released.exit_code == 0, released.output
    said = " ".join(released.output.split())
    assert "guards: model -> chat-input-sanitizer" in said and "(forced)" not in said
    assert TOKEN not in released.output

    (decided_event, passed_event) = _events(ws, "gate.decided")
    passed = GateDecided.from_payload(passed_event.payload)
    (event,) = _events(ws, "model.released")
    record = ModelReleased.from_payload(event.payload, seq=event.seq)
    opened = Workspace.open(ws / "hardenml.toml")
    # Released under the identity the passing gate decided on: endpoint + guard file.
    assert record.model_sha256 == passed.model_sha256 == opened.model_sha256()
    assert record.gate_seq == passed_event.seq and not record.forced
    assert record.path == guards.as_posix()
    assert record.patch == "chat-input-sanitizer"
    assert record.parent_sha256 == GateDecided.from_payload(decided_event.payload).model_sha256
    assert record.chat is not None
    assert record.chat["guards_sha256"] == file_sha256(guards)
    assert record.chat["guards"] == [
        {"patch": g.patch, "params": g.params} for g in read_guards(guards)
    ]
    assert record.chat["base_url"] == server.base_url
    assert record.chat["endpoint_sha256"] == record.parent_sha256  # the bare endpoint
    assert [Measurement.from_dict(m).key for m in record.measurements] == [
        "robust_accuracy[injection@1]"
    ]

    # The next gate evaluates the released guarded model: the very one, so no regression.
    regate = runner.invoke(app, ["gate"])
    assert regate.exit_code == 0, regate.output
    last = GateDecided.from_payload(_events(ws, "gate.decided")[-1].payload)
    assert last.model_sha256 == record.model_sha256 and last.status == "pass"
    regression = [c for c in last.extra_checks if c["name"].startswith("regression")]
    assert regression and all(c["passed"] for c in regression)
    assert "this is the released model" in regression[0]["reason"]
    # `released` names it as a baseline: the same guarded model, probed again.
    again = runner.invoke(app, ["validate", "released", str(guards), "--json"])
    assert again.exit_code == 0, again.output
    verdict = json.loads(again.stdout)
    assert verdict["baseline_sha256"] == verdict["candidate_sha256"] == record.model_sha256

    # A guard file no gate decided on, and the same guards before another endpoint, are
    # different models: their release is refused, naming what is missing.
    blunt = runner.invoke(app, ["patch", "--with", "chat-output-filter", "--set", 'secrets=["e"]'])
    assert blunt.exit_code == 0, blunt.output
    (blocker,) = Path("artifacts/models").glob("*chat-output-filter*.guards.json")
    ungated = runner.invoke(app, ["release", str(blocker)])
    assert ungated.exit_code == 2 and "has no gate decision" in " ".join(ungated.output.split())
    config = ws / "hardenml.toml"
    config.write_text(config.read_text().replace("timeout = 5.0", "max_tokens = 64"))
    moved = runner.invoke(app, ["release"])
    assert moved.exit_code == 2 and "has no gate decision" in " ".join(moved.output.split())
    assert len(_events(ws, "model.released")) == 1
