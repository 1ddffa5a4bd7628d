"""`hardenml monitor` from the command line: refusals exit 2 naming the fix, rollback
reaches a running service, verify walks the telemetry chain."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hardenml.cli import app
from hardenml.records import TRAFFIC_SWITCHED
from monitor_support import (
    TOKEN,
    TOKEN_ENV,
    call,
    monitor_workspace,
    running,
    save_weights,
    second_mlp,
)
from workspace import write_workspace

runner = CliRunner()


def run(*args: str) -> object:
    return runner.invoke(app, list(args), catch_exceptions=False)


def flat(output: str) -> str:
    return " ".join(output.split())


def test_serve_refuses_to_run_without_a_token_or_a_release(
    tmp_path: Path, digits_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    config = write_workspace(tmp_path / "ws", digits_weights)
    result = runner.invoke(app, ["monitor", "serve", "--config", str(config)])
    assert result.exit_code == 2
    assert f"{TOKEN_ENV} is unset" in flat(result.output)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    result = runner.invoke(app, ["monitor", "serve", "--config", str(config)])
    assert result.exit_code == 2
    assert "no release of 'digits-mlp' is recorded" in flat(result.output)
    with config.open("a") as fh:
        fh.write("\n[monitor]\ntraffic_split = 0.5\n")
    result = runner.invoke(app, ["monitor", "serve", "--config", str(config)])
    assert result.exit_code == 2 and "monitor.traffic_split" in flat(result.output)


def test_rollback_from_the_cli_moves_a_running_service_to_the_release(
    tmp_path: Path,
    digits_weights: Path,
    digits: tuple[np.ndarray, ...],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    candidate = save_weights(second_mlp(digits[0], digits[1]), tmp_path / "cand.safetensors")
    folder = tmp_path / "ws"
    folder.mkdir()
    (folder / candidate.name).write_bytes(candidate.read_bytes())
    ws = monitor_workspace(
        folder, digits_weights, monitor="detectors = []\ntraffic_split = 1.0\n", candidate=candidate
    )
    config = str(ws.config.source)
    with running(ws) as served:
        released, cand = (m.version for m in served.service.versions())
        row = {"inputs": digits[2][0].tolist()}
        assert call(served.port, "POST", "/v1/predict", row).json()["model_version"] == cand
        result = run(
            "monitor",
            "rollback",
            "--config",
            config,
            "--url",
            served.url,
            "--reason",
            "canary failed",
        )
        assert result.exit_code == 0, result.output
        assert call(served.port, "POST", "/v1/predict", row).json()["model_version"] == released
        monkeypatch.setenv(TOKEN_ENV, "not-the-token")
        refused = runner.invoke(
            app, ["monitor", "rollback", "--config", config, "--url", served.url]
        )
    assert refused.exit_code == 2 and "401" in refused.output
    event = [e for e in ws.ledger.events() if e.kind == TRAFFIC_SWITCHED][-1]
    assert event.payload["reason"] == "canary failed" and event.payload["after"][released] == 1.0


def test_verify_walks_the_telemetry_chain_and_names_an_edit(
    tmp_path: Path,
    digits_weights: Path,
    digits: tuple[np.ndarray, ...],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    ws = monitor_workspace(tmp_path / "ws", digits_weights)
    with running(ws) as served:
        for start in range(0, 30, 10):
            batch = {"inputs": digits[2][start : start + 10].tolist()}
            assert call(served.port, "POST", "/v1/predict", batch).status == 200
    config = str(ws.config.source)
    result = run("monitor", "verify", "--config", config)
    assert result.exit_code == 0 and "telemetry ok: 30 records" in result.output
    with sqlite3.connect(ws.config.ledger_path) as conn:
        conn.execute(
            "UPDATE telemetry SET client_id = 'someone-else', "
            "record = replace(record, '127.0.0.1', '10.0.0.9') WHERE row = 3"
        )
    result = runner.invoke(app, ["monitor", "verify", "--config", config])
    assert result.exit_code == 1
    assert "telemetry batch" in result.output and "its records were changed" in result.output
