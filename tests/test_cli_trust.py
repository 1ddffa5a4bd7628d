"""The CLI decides only on a verified, readable ledger, never writes from a query, and turns
bad config, data and options into exit 2 with a message (issue 11, findings 1 to 4)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hardenml import workflow
from hardenml.cli import app
from hardenml.data import load_source
from hardenml.gate import EXIT_TAMPERED, EXIT_USAGE, decide
from hardenml.ledger import RunRecord, canonical_json
from workspace import write_workspace

runner = CliRunner()


def run(*args: str):
    """One command; an exception other than the exit would fail the test with its traceback."""
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def flat(text: str) -> str:
    """Without whitespace: rich wraps long paths and messages at the terminal's width."""
    return "".join(text.split())


def row_count(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def scanned(tmp_path: Path, digits_weights: Path) -> tuple[Path, str]:
    """A scanned workspace whose gate fails on its robust-accuracy check alone (no finding
    severity blocks it), and the id of the finding that check opened."""
    config = write_workspace(tmp_path / "ws", digits_weights, min_robust=0.9, max_samples=60)
    text = config.read_text().replace(
        "min_clean_accuracy = 0.8\n", "min_clean_accuracy = 0.8\nfail_on = []\n"
    )
    config.write_text(text)
    (finding,) = workflow.scan(workflow.Workspace.open(config)).findings
    return config, finding.finding_id


def _edit_robust_accuracy(db: Path, value: float) -> RunRecord:
    """What a tamperer does: drop the triggers and raise the measured robust accuracy
    inside the `run.completed` payload. Returns the run as the edited row now reads."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER events_append_only_update")
    ((seq, text),) = conn.execute(
        "SELECT seq, payload FROM events WHERE kind = 'run.completed'"
    ).fetchall()
    payload = json.loads(text)
    edited = [m for m in payload["measurements"] if m["metric"] == "robust_accuracy"]
    for measurement in edited:
        measurement["value"] = value
    assert edited
    conn.execute("UPDATE events SET payload = ? WHERE seq = ?", (canonical_json(payload), seq))
    conn.close()
    return RunRecord(payload["run_id"], payload["model"], payload["model_sha256"], payload, seq)


def test_the_gate_refuses_a_run_edited_to_pass(scanned: tuple[Path, str]):
    config, finding_id = scanned
    ws = workflow.Workspace.open(config)
    db = ws.config.ledger_path
    edited = _edit_robust_accuracy(db, 0.99)
    # The edit works: decided on the rows as they now read, the gate would pass.
    assert decide(ws.config, edited, {}).passed
    events_before = row_count(db)
    result = run("gate", "--config", str(config))
    assert result.exit_code == EXIT_TAMPERED
    shown = flat(result.output)
    assert "TAMPERED" in shown and "event#1" in shown and "ledgerverify" in shown
    assert "GATE PASSED" not in result.output
    assert not (config.parent / "gate-report.json").exists()
    assert not ws.config.reports_dir.exists()
    # Every command that reads state refuses it as well, and none writes to it.
    model = str(config.parent / "model.safetensors")
    for command in (
        ["findings", "list"],
        ["findings", "show", finding_id],
        ["findings", "overdue"],
        ["findings", "resolve", finding_id, "--by", "mallory", "--reason", "looks fine"],
        ["validate", model, model],
        ["release", "--force"],
        ["scan"],
    ):
        result = run(*command, "--config", str(config))
        assert result.exit_code == EXIT_TAMPERED, (command, result.output)
        assert "TAMPERED" in result.output, command
    assert row_count(db) == events_before


def _random_bytes(good: bytes) -> bytes:
    return np.random.default_rng(0).bytes(len(good))


@pytest.mark.parametrize(
    "damage",
    [_random_bytes, lambda good: good[: len(good) // 2], lambda good: b"", lambda good: b"notes\n"],
    ids=["random-bytes", "truncated", "zero-bytes", "not-sqlite"],
)
def test_a_damaged_ledger_is_exit_2_naming_the_file_on_every_command(
    scanned: tuple[Path, str], damage: Callable[[bytes], bytes]
):
    config, finding_id = scanned
    db = config.parent / "hardenml.db"
    bad = damage(db.read_bytes())
    db.write_bytes(bad)
    model = str(config.parent / "model.safetensors")
    for command in (
        ["ledger", "verify"],
        ["findings", "list"],
        ["findings", "show", finding_id],
        ["findings", "overdue", "--as-of", "2030-01-01"],
        ["findings", "assign", finding_id, "--to", "a", "--by", "b", "--reason", "c"],
        ["scan"],
        ["gate"],
        ["validate", model, model],
        ["release", "--force"],
    ):
        result = run(*command, "--config", str(config))
        assert result.exit_code == EXIT_USAGE, (command, result.output)
        assert flat(str(db)) in flat(result.output) and "backup" in result.output, command
    assert db.read_bytes() == bad


_AS_OTHER_USER = """
import json, sys
from typer.testing import CliRunner
from hardenml.cli import app
out = []
for args in json.loads(sys.argv[1]):
    result = CliRunner().invoke(app, args)
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    out.append({"code": result.exit_code, "output": result.output, "crashed": crashed})
print(json.dumps(out))
"""


@pytest.fixture
def read_only_copy(scanned: tuple[Path, str]) -> Iterator[tuple[Path, str]]:
    """The scanned workspace copied into a folder this test's CLI process cannot write: for
    root (whom permissions do not stop) the CLI runs as `nobody`, so the folder lies outside
    pytest's private temporary folder."""
    config, finding_id = scanned
    base = Path(tempfile.mkdtemp(prefix="hardenml-ro-"))
    base.chmod(0o755)
    folder = base / "ws"
    folder.mkdir()
    for name in ("hardenml.toml", "model.safetensors", "hardenml.db"):
        shutil.copy(config.parent / name, folder / name)
        (folder / name).chmod(0o444)
    folder.chmod(0o555)
    try:
        yield folder / "hardenml.toml", finding_id
    finally:
        folder.chmod(0o755)
        shutil.rmtree(base)


@pytest.mark.slow
def test_a_read_only_ledger_folder_serves_queries_and_refuses_writes(
    read_only_copy: tuple[Path, str],
):
    config, finding_id = read_only_copy
    if os.geteuid() == 0:
        # As root no permission stops a write: the commands run as nobody, via util-linux's
        # setpriv (on every Debian-based CI image); without it the test cannot say anything.
        setpriv = shutil.which("setpriv")
        assert setpriv is not None, "running as root, this test needs setpriv (util-linux)"
        prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    else:
        prefix = []
    later = (date.today() + timedelta(days=30)).isoformat()
    c = str(config)
    commands = [
        ["findings", "list", "--json", "--config", c],
        ["findings", "show", finding_id, "--config", c],
        ["ledger", "verify", "--config", c],
        ["findings", "overdue", "--as-of", later, "--config", c],
        [
            "findings",
            "assign",
            finding_id,
            "--to",
            "a",
            "--by",
            "b",
            "--reason",
            "c",
            "--config",
            c,
        ],
        ["gate", "--config", c],
        ["scan", "--config", c],
    ]
    db = config.parent / "hardenml.db"
    before = (db.read_bytes(), sorted(os.listdir(config.parent)))
    done = subprocess.run(
        [*prefix, sys.executable, "-c", _AS_OTHER_USER, json.dumps(commands)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=config.parent,
        env={**os.environ, "HOME": str(config.parent), "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    listed, shown, verified, overdue, assigned, gated, scanned_again = json.loads(done.stdout)
    assert not any(r["crashed"] for r in json.loads(done.stdout)), done.stdout
    assert listed["code"] == 0 and json.loads(listed["output"])[0]["finding_id"] == finding_id
    assert shown["code"] == 0 and "finding.opened" in shown["output"]
    assert verified["code"] == 0 and "ledger ok" in verified["output"]
    assert overdue["code"] == 1 and "nothing recorded" in overdue["output"]
    for refused in (assigned, gated, scanned_again):
        assert refused["code"] == EXIT_USAGE, refused["output"]
        assert "read-only" in refused["output"] and "Traceback" not in refused["output"]
    assert (db.read_bytes(), sorted(os.listdir(config.parent))) == before


def test_a_what_if_query_never_writes(scanned: tuple[Path, str]):
    config, finding_id = scanned
    ws = workflow.Workspace.open(config)
    head = ws.ledger.verify().head
    for days in (10, 400):
        later = (date.today() + timedelta(days=days)).isoformat()
        result = run("findings", "overdue", "--as-of", later, "--config", str(config))
        assert result.exit_code == 1 and finding_id in result.output
    for command in (["findings", "list"], ["findings", "show", finding_id], ["ledger", "verify"]):
        assert run(*command, "--config", str(config)).exit_code == 0
    assert ws.ledger.verify().head == head


def _npz(folder: Path, **arrays: np.ndarray) -> None:
    np.savez(folder / "data.npz", **arrays)


def _digits_with_nan(folder: Path) -> None:
    digits = load_source("digits")
    x = digits.x.copy()
    x[7, 3] = np.nan
    _npz(folder, x=x, y=digits.y)


@pytest.mark.parametrize(
    ("edit", "write_data", "message"),
    [
        (("steps = 10", "steps = 10.5"), None, "threats[0].steps (line 29): found 10.5"),
        (("steps = 10", 'steps = "ten"'), None, "threats[0].steps (line 29): found 'ten'"),
        (("budgets = [0.02, 0.1]", "budgets = [0.02, nan]"), None, "threats[0].budgets[1]"),
        (("budgets = [0.02, 0.1]", "budgets = [0.02, inf]"), None, "finite number"),
        (("budget = 0.1\n", "budget = 0.05\n"), None, "policy.robust[0].budget (line"),
        (None, _digits_with_nan, "1 NaN or infinite values in 1 samples (first at row 7)"),
        (None, lambda f: (f / "data.npz").write_bytes(b""), "the file is empty (0 bytes)"),
        (
            None,
            lambda f: _npz(f, x=np.zeros((0, 64), np.float32), y=np.zeros(0, np.int64)),
            "'x' holds no samples",
        ),
        (None, lambda f: _npz(f), "must hold arrays 'x' and 'y'"),
        (
            None,
            lambda f: (f / "data.npz").write_bytes(np.random.default_rng(1).bytes(500)),
            "not an .npz (zip) archive",
        ),
    ],
    ids=[
        "float-steps",
        "text-steps",
        "nan-budget",
        "inf-budget",
        "policy-budget",
        "nan-data",
        "zero-byte-npz",
        "empty-npz",
        "npz-without-arrays",
        "random-npz",
    ],
)
def test_bad_config_and_data_exit_2_before_any_scan_work(
    scanned: tuple[Path, str], edit, write_data, message: str
):
    config, _ = scanned
    db = config.parent / "hardenml.db"
    before = row_count(db)
    text = config.read_text()
    if edit is not None:
        assert edit[0] in text
        text = text.replace(*edit)
    if write_data is not None:
        write_data(config.parent)
        text = text.replace('source = "digits"', 'source = "data.npz"')
    config.write_text(text)
    for command in (["scan"], ["gate"]):
        result = run(*command, "--config", str(config))
        assert result.exit_code == EXIT_USAGE, result.output
        assert flat(message) in flat(result.output), result.output
    assert row_count(db) == before
    assert not (config.parent / "artifacts" / "checkpoints").exists() or not any(
        (config.parent / "artifacts" / "checkpoints").iterdir()
    )


@pytest.mark.parametrize(
    ("option", "value", "shown"),
    [("--max-samples", "-5", "-5"), ("--max-samples", "0", "0"), ("--max-seconds", "-1", "-1.0")],
)
def test_caps_that_are_not_positive_exit_2_with_a_message(
    scanned: tuple[Path, str], option: str, value: str, shown: str
):
    config, _ = scanned
    before = row_count(config.parent / "hardenml.db")
    result = run("scan", option, value, "--config", str(config))
    assert result.exit_code == EXIT_USAGE, result.output
    assert flat(f"({option}): found {shown}; expected a positive") in flat(result.output)
    assert row_count(config.parent / "hardenml.db") == before


def test_a_factory_that_refuses_its_arguments_is_exit_2(scanned: tuple[Path, str]):
    """Found by the fuzz test: a missing `factory_kwargs` crashed inside the factory."""
    config, _ = scanned
    kwargs = "factory_kwargs = { in_features = 64, classes = 10, hidden = 32 }\n"
    config.write_text(config.read_text().replace(kwargs, ""))
    result = run("scan", "--config", str(config))
    assert result.exit_code == EXIT_USAGE
    expected = "model.factory 'hardenml.zoo:mlp' failed when called with model.factory_kwargs = {}"
    assert flat(expected) in flat(result.output)
