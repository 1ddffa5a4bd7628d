"""`hardenml intake`: real adversarial examples, made with hardenml's own PGD on the trained
digits MLP, reproduce and open a credited finding with the reproduction as evidence; ones
outside the declared budget, or with a budget that cannot be checked, are refused with the
reason; acknowledgement and outcome are ledger events."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hardenml.cli import app
from hardenml.ledger import Ledger, findings_state
from hardenml.records import IntakeDecided, IntakeReceived
from hardenml.targets import TorchTarget
from hardenml.threats.pgd import LinfPGD
from workspace import write_workspace

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False, env={"HARDENML_LEDGER_KEY": ""})


def adversarial(
    target: TorchTarget, x: np.ndarray, y: np.ndarray, budget: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PGD examples at `budget` that flip correctly classified originals."""
    xs, ys = torch.from_numpy(x[:80]).float(), torch.from_numpy(y[:80]).long()
    result = LinfPGD(steps=20)(
        target, xs, ys, budget=budget, generator=torch.Generator().manual_seed(0)
    )
    flipped = (result.success & result.clean_correct).numpy()
    assert flipped.sum() >= 5, "the MLP is not robust at this budget"
    return result.x_adv.numpy()[flipped], xs.numpy()[flipped], ys.numpy()[flipped]


@pytest.fixture
def workspace(tmp_path: Path, digits_weights: Path) -> Path:
    return write_workspace(tmp_path / "ws", digits_weights)  # pgd-linf budgets 0.02, 0.1


def submit(path: Path, **arrays: object) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def intake_events(cfg: Path) -> list:
    return [e for e in Ledger(cfg.parent / "hardenml.db").events() if e.kind.startswith("intake.")]


@pytest.mark.slow
def test_real_adversarial_examples_reproduce_and_open_a_credited_finding(
    workspace: Path, digits_target: TorchTarget, digits: tuple, tmp_path: Path
) -> None:
    _, _, x_test, y_test = digits
    inputs, originals, labels = adversarial(digits_target, x_test, y_test, 0.1)
    path = submit(
        tmp_path / "report.npz",
        inputs=inputs,
        originals=originals,
        labels=labels,
        submitter=np.array("alice (bug bounty)"),
        contact=np.array("alice@example.org"),
        norm=np.array("linf"),
        budget=np.array(0.1),
    )
    result = run("intake", str(path), "--config", str(workspace), "--by", "triage-bot")
    assert result.exit_code == 0, result.output
    assert "reproduced" in result.output and "credited finding" in result.output

    received, decided = intake_events(workspace)
    ack = IntakeReceived.from_payload(received.payload)
    assert ack.submitter == "alice (bug bounty)" and ack.contact == "alice@example.org"
    assert ack.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert received.actor == "triage-bot"
    outcome = IntakeDecided.from_payload(decided.payload)
    assert outcome.outcome == "reproduced"
    assert outcome.in_scope == outcome.reproduced == len(labels)
    finding = findings_state(Ledger(workspace.parent / "hardenml.db").events())[
        str(outcome.finding_id)
    ]
    assert finding.credit == {
        "submitter": "alice (bug bounty)",
        "contact": "alice@example.org",
        "submission_id": ack.submission_id,
    }
    assert finding.threat == "pgd-linf" and finding.budget == 0.1
    assert finding.taxonomy["atlas"][0] == "AML.T0043.000"
    evidence = finding.evidence[0]
    stored = workspace.parent / evidence["path"]
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == evidence["sha256"]
    with np.load(stored) as kept:
        assert np.array_equal(kept["adversarial"], inputs.astype(np.float32))
        assert (
            digits_target.predict(torch.from_numpy(kept["adversarial"])).numpy() != labels
        ).all()


@pytest.mark.slow
def test_out_of_budget_examples_are_refused_with_the_reason(
    workspace: Path, digits_target: TorchTarget, digits: tuple, tmp_path: Path
) -> None:
    _, _, x_test, y_test = digits
    inputs, originals, labels = adversarial(digits_target, x_test, y_test, 0.3)
    path = submit(
        tmp_path / "wide.npz",
        inputs=inputs,
        originals=originals,
        labels=labels,
        submitter=np.array("bob"),
    )
    result = run("intake", str(path), "--config", str(workspace))
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "refused" in said
    assert "exceeds the largest declared budget 0.1 (pgd-linf)" in said
    _, decided = intake_events(workspace)
    outcome = IntakeDecided.from_payload(decided.payload)
    assert outcome.outcome == "refused" and outcome.finding_id is None
    assert any("linf distance 0.3" in reason for reason in outcome.reasons)
    assert not findings_state(Ledger(workspace.parent / "hardenml.db").events())


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"budget": np.array(0.5)}, "claimed budget 0.5 exceeds the largest declared budget 0.1"),
        ({"drop_originals": True}, "no `originals`"),
        ({"norm": np.array("l2")}, "claimed norm l2 is not one the threat model declares"),
    ],
    ids=["claimed-budget", "no-originals", "undeclared-norm"],
)
def test_a_submission_outside_the_threat_model_is_refused_as_a_whole(
    workspace: Path, tmp_path: Path, digits: tuple, extra: dict, reason: str
) -> None:
    _, _, x_test, y_test = digits
    arrays = {
        "inputs": x_test[:4].astype(np.float32),
        "originals": x_test[:4].astype(np.float32),
        "labels": y_test[:4],
        "submitter": np.array("carol"),
    }
    if extra.pop("drop_originals", False):
        del arrays["originals"]
    path = submit(tmp_path / "claim.npz", **arrays, **extra)
    result = run("intake", str(path), "--config", str(workspace))
    assert result.exit_code == 0, result.output
    assert reason in " ".join(result.output.split())
    assert IntakeDecided.from_payload(intake_events(workspace)[1].payload).outcome == "refused"


def test_a_file_that_is_not_a_submission_is_a_usage_error(workspace: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.npz"
    junk.write_text("not a zip")
    refused = run("intake", str(junk), "--config", str(workspace))
    assert refused.exit_code == 2 and "not an .npz (zip) archive" in refused.output
    # numpy reads a bare .npy whatever its name; it is still no submission (was exit 3)
    bare = tmp_path / "bare.npz"
    np.save(tmp_path / "bare.npy", np.zeros((2, 64)))
    bare.write_bytes((tmp_path / "bare.npy").read_bytes())
    refused = run("intake", str(bare), "--config", str(workspace))
    assert refused.exit_code == 2 and "not an .npz (zip) archive" in refused.output
    unnamed = submit(tmp_path / "anon.npz", inputs=np.zeros((1, 64)), labels=np.zeros(1, int))
    refused = run("intake", str(unnamed), "--config", str(workspace))
    assert refused.exit_code == 2 and "submitter" in refused.output
    assert not intake_events(workspace), "nothing acknowledged for a file that is no submission"
