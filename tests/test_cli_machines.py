"""The `hardenml` command as CI scripts use it: `gate --json` on stdout alone, the config
found from a subfolder or through HARDENML_CONFIG, and no stale PASS left behind by a
gate that could not decide."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hardenml.cli import app
from hardenml.report.bundle import report_files
from workspace import write_workspace

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def repo(tmp_path: Path, digits_weights: Path) -> Path:
    """A git checkout (a `.git` folder) with a workspace at its root that fails the gate."""
    (tmp_path / ".git").mkdir()
    write_workspace(tmp_path, digits_weights, min_clean=0.5, min_robust=0.9, max_samples=60)
    return tmp_path


@pytest.mark.slow
def test_gate_json_prints_the_gate_report_and_nothing_else_on_stdout(repo: Path) -> None:
    """In a real process from a subfolder: stdout parses as one JSON document, the same as
    gate-report.json; progress lines went to stderr."""
    sub = repo / "notebooks"
    sub.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "HARDENML_CONFIG"}
    done = subprocess.run(
        [sys.executable, "-m", "hardenml", "gate", "--json"],
        cwd=sub,
        env={**env, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report == json.loads((repo / "gate-report.json").read_text())
    assert report["decision"]["status"] == "fail" and report["decision"]["exit_code"] == 1
    assert "scanning" in done.stderr  # the progress lines


def test_hardenml_config_points_the_command_at_the_file(
    repo: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / ".git").mkdir()
    monkeypatch.chdir(elsewhere)
    assert run("findings", "list", "--json").exit_code == 2  # nothing here
    monkeypatch.setenv("HARDENML_CONFIG", str(repo / "hardenml.toml"))
    gate = run("gate", "--json")
    assert gate.exit_code == 1
    assert json.loads(gate.stdout)["project"] == "digits-test"
    monkeypatch.setenv("HARDENML_CONFIG", str(repo / "nope.toml"))
    missing = run("gate")
    assert missing.exit_code == 2 and "HARDENML_CONFIG" in missing.output


def _pass(repo: Path) -> list[Path]:
    config = repo / "hardenml.toml"
    config.write_text(config.read_text().replace("min_accuracy = 0.9", "min_accuracy = 0.0"))
    first = run("gate")
    assert first.exit_code == 0, first.output
    written = [*report_files(repo / "reports"), repo / "gate-report.json"]
    assert all(p.is_file() for p in written)
    assert json.loads((repo / "gate-report.json").read_text())["decision"]["status"] == "pass"
    return written


def test_a_gate_that_cannot_decide_removes_the_previous_pass(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo)
    monkeypatch.delenv("HARDENML_CONFIG", raising=False)
    written = _pass(repo)
    config = repo / "hardenml.toml"
    config.write_text(config.read_text().replace("[policy]", "[policy]\nmin_acuracy = 0.5"))
    broken = run("gate")
    assert broken.exit_code == 2 and "min_acuracy" in broken.output
    assert not any(p.exists() for p in written)
    assert "removed" in broken.output and "gate-report.json" in broken.output
    # Files that are not hardenml's reports stay.
    assert (repo / "model.safetensors").is_file() and config.is_file()


def test_the_reports_of_a_custom_folder_go_too_even_when_the_file_is_not_toml(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo)
    monkeypatch.delenv("HARDENML_CONFIG", raising=False)
    config = repo / "hardenml.toml"
    config.write_text(config.read_text() + '\n[reports]\ndir = "out/ci"\n')
    config.write_text(config.read_text().replace("min_accuracy = 0.9", "min_accuracy = 0.0"))
    assert run("gate").exit_code == 0
    custom = report_files(repo / "out" / "ci")
    assert all(p.is_file() for p in custom)
    # Valid TOML, invalid config: the folder it names is still read.
    config.write_text(config.read_text().replace('kind = "pytorch"', 'kind = "tensorflow"'))
    assert run("gate").exit_code == 2
    assert not any(p.exists() for p in custom)
    assert not (repo / "gate-report.json").exists()
    # Not TOML at all: the default places are cleared.
    (repo / "reports").mkdir()
    stale = repo / "reports" / "report.sarif"
    stale.write_text("{}")
    config.write_text("this is [not toml")
    assert run("gate").exit_code == 2 and not stale.exists()
