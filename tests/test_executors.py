"""Scans sharded over Dask workers give the local scan's numbers, survive a dying worker
and land in the ledger once. Real `LocalCluster`s on 127.0.0.1 with two worker processes;
no mocks."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
import pytest
from tests.workspace import write_workspace
from typer.testing import CliRunner

from hardenml import workflow
from hardenml.cli import build_app
from hardenml.cli._shared import ExecutorName, executor_for
from hardenml.config import load_config
from hardenml.executors import DaskExecutor, ExecutorError, LocalExecutor

# Four batches of 30 out of 120 samples, so the two workers share the shards.
SCAN_TABLE = "\n[scan]\nbatch_size = 30\n"


def _workspace(folder: Path, weights: Path) -> Path:
    config = write_workspace(folder, weights, min_robust=0.99)
    config.write_text(config.read_text() + SCAN_TABLE)
    return config


def _runs(config: Path) -> list[dict[str, Any]]:
    return [e.payload for e in workflow.Workspace.open(config).ledger.events(["run.completed"])]


def _findings(config: Path, run_id: str) -> list[tuple[str, str, list[str]]]:
    """The findings a run opened or observed, with the sha256 of each piece of evidence
    (the adversarial examples themselves, so the kept examples must match too)."""
    events = workflow.Workspace.open(config).ledger.events(["finding.opened", "finding.observed"])
    return sorted(
        (
            e.payload["finding_id"],
            e.payload["severity"],
            [x.get("sha256", "") for x in e.payload.get("evidence", [])],
        )
        for e in events
        if e.payload["run_id"] == run_id
    )


class RecordedProgress:
    """A progress reporter that keeps what the scan's batch task was advanced by."""

    def __init__(self) -> None:
        self.advances: list[int] = []

    def task(self, label: str, total: int) -> Callable[[int], None]:
        if not label.startswith("scanning"):
            return lambda n: None
        return self.advances.append


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_cli_scan_on_dask_gives_the_local_numbers(tmp_path: Path, digits_weights: Path) -> None:
    config = _workspace(tmp_path / "ws", digits_weights)
    app = build_app()
    runner = CliRunner()
    local = runner.invoke(app, ["scan", "-c", str(config)])
    assert local.exit_code in (0, 1), local.output
    on_dask = runner.invoke(
        app, ["scan", "-c", str(config), "--executor", "dask", "--workers", "2"]
    )
    assert on_dask.exit_code in (0, 1), on_dask.output
    assert "robust_accuracy[pgd-linf@0.1]" in on_dask.output
    first, second = _runs(config)
    assert second["measurements"] == first["measurements"]
    assert _findings(config, second["run_id"]) == _findings(config, first["run_id"])
    assert _findings(config, first["run_id"])  # the policy fails: there is evidence to compare
    assert second["checks"] == first["checks"]
    assert second["calibration"] == first["calibration"]
    assert second["n"] == first["n"] == 120
    # The workers' calls are the scan's calls too: the same count on both executors.
    assert second["scan"]["queries"] == first["scan"]["queries"] > 0


@pytest.mark.slow
def test_a_worker_that_dies_has_its_shard_retried(tmp_path: Path, digits_weights: Path) -> None:
    folder = tmp_path / "ws"
    config = _workspace(folder, digits_weights)
    shutil.copy(Path(__file__).with_name("kill_once_model.py"), folder / "kill_once_model.py")
    marker = tmp_path / "a-worker-died"
    text = (
        config.read_text()
        .replace(
            'factory = "hardenml.zoo:mlp"',
            'factory = "kill_once_model:mlp_that_kills_a_worker_once"',
        )
        .replace(
            "factory_kwargs = { ",
            f'factory_kwargs = {{ marker = "{marker}", test_pid = {os.getpid()}, ',
        )
    )
    config.write_text(text)
    ws = workflow.Workspace.open(config)
    local = workflow.scan(ws)
    assert not marker.exists()  # the scan's own process never dies
    progress = RecordedProgress()
    with DaskExecutor(workers=2) as executor:
        distributed = workflow.scan(
            workflow.Workspace.open(config), executor=executor, progress=progress
        )
    assert marker.exists()  # one worker died mid-shard, and the scan still finished
    assert [m.as_dict() for m in distributed.measurements] == [
        m.as_dict() for m in local.measurements
    ]
    # The progress advanced once per shard, as each came back.
    assert progress.advances == [30, 30, 30, 30]
    runs = _runs(config)
    assert len(runs) == 2  # each scan reached the ledger once
    assert runs[1]["measurements"] == runs[0]["measurements"]


def test_a_bad_scheduler_address_is_a_usage_error(tmp_path: Path, digits_weights: Path) -> None:
    config = _workspace(tmp_path / "ws", digits_weights)
    address = f"tcp://127.0.0.1:{_free_port()}"
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        result = CliRunner().invoke(
            build_app(), ["scan", "-c", str(config), "--executor", "dask", "--scheduler", address]
        )
    assert result.exit_code == 2, result.output
    assert "--scheduler" in result.output and address in result.output
    assert "Traceback" not in result.output
    assert _runs(config) == []


def test_the_options_fill_in_the_scan_keys(tmp_path: Path, digits_weights: Path) -> None:
    config = _workspace(tmp_path / "ws", digits_weights)
    config.write_text(config.read_text() + 'executor = "dask"\nworkers = 3\n')
    scan_keys = load_config(config).scan
    chosen = executor_for(scan_keys, None, None, None)
    assert isinstance(chosen, DaskExecutor) and chosen.workers == 3
    assert isinstance(executor_for(scan_keys, ExecutorName.local, None, None), LocalExecutor)
    joined = executor_for(load_config(config).scan, ExecutorName.dask, "tcp://127.0.0.1:1", 1)
    assert isinstance(joined, DaskExecutor) and joined.scheduler == "tcp://127.0.0.1:1"
    with pytest.raises(ExecutorError, match="--scheduler"):
        executor_for(scan_keys, ExecutorName.local, "tcp://127.0.0.1:1", None)


def test_where_the_batches_run_leaves_the_fingerprint_alone(
    tmp_path: Path, digits_weights: Path
) -> None:
    config = _workspace(tmp_path / "ws", digits_weights)
    before = workflow.Workspace.open(config).scan_fingerprint("m", "d", 0)
    config.write_text(config.read_text() + 'executor = "dask"\nworkers = 4\n')
    assert workflow.Workspace.open(config).scan_fingerprint("m", "d", 0) == before
