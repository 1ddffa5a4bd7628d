"""Telemetry batches: the digest chain shows every edit, retention keeps it verifiable,
and SIGTERM on `hardenml monitor serve` flushes it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hardenml.monitor.telemetry import (
    TelemetryRecord,
    TelemetryStore,
    input_fingerprints,
    verify_telemetry,
)
from monitor_support import TOKEN, TOKEN_ENV, call, monitor_workspace, serve_cli


def record(i: int, *, client: str = "c") -> TelemetryRecord:
    sha, summary = input_fingerprints(np.full((1, 4), i, dtype=np.float32))[0]
    return TelemetryRecord(
        request_id=f"r{i}",
        at=time.time(),
        client_id=client,
        model_version="m@abc",
        source="predict",
        input_sha256=sha,
        input_summary=summary,
        scores=[0.25, 0.75],
        predicted=1,
        confidence=0.75,
        latency_ms=1.0,
    )


def filled(path: Path, batches: int, per_batch: int) -> TelemetryStore:
    store = TelemetryStore(path)
    for b in range(batches):
        store.append_batch([record(b * per_batch + i) for i in range(per_batch)])
    return store


def test_the_chain_names_an_edited_a_deleted_and_a_reordered_batch(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    filled(path, 5, 4)
    assert verify_telemetry(path).ok
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE telemetry SET record = replace(record, '\"confidence\":0.75', "
            "'\"confidence\":0.95') WHERE row = 6"
        )
    report = verify_telemetry(path)
    assert [str(p) for p in report.problems] == ["telemetry batch 2: its records were changed"]
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM telemetry WHERE row = 6")
        conn.execute("DELETE FROM telemetry_batches WHERE batch = 4")
    problems = [str(p) for p in verify_telemetry(path).problems]
    assert "telemetry batch 2: holds 3 records, not 4" in problems
    assert "telemetry batch 5: expected batch 4 here" in problems
    assert "telemetry batch 5: does not follow the batch before it" in problems


def test_retention_by_count_and_by_age_keeps_the_rest_verifiable(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = filled(path, 6, 10)
    # Whole batches go, oldest first, until at most 25 records remain.
    assert store.prune(max_records=25, max_age_s=None) == 40
    assert store.count() == 20
    report = verify_telemetry(path)
    assert report.ok and report.pruned_records == 40 and report.batches == 2
    store.append_batch([record(99)])
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE telemetry_batches SET written_at = 0 WHERE batch <= 5")
    # The oldest batches are past any age; the newest batch (the chain's head) stays.
    assert store.prune(max_records=None, max_age_s=3600) == 10
    report = verify_telemetry(path)
    assert report.ok and report.records == 11 and report.pruned_records == 50
    assert [r["request_id"] for r in store.records()][-1] == "r99"


@pytest.mark.slow
def test_sigterm_on_the_cli_service_flushes_every_record(
    tmp_path: Path, digits_weights: Path, digits: tuple[np.ndarray, ...]
) -> None:
    # A long flush interval and large batches: whatever was queued at SIGTERM is only
    # written by the shutdown.
    ws = monitor_workspace(
        tmp_path / "ws",
        digits_weights,
        monitor="detectors = []\n[monitor.telemetry]\nbatch_size = 100000\nflush_interval_s = 60\n",
    )
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, TOKEN_ENV: TOKEN, "OMP_NUM_THREADS": "1"}
    server = serve_cli(ws.config.source, port, env)
    try:
        rows = digits[2][:30]
        sent = 0
        for i in range(60):
            batch = rows[: 1 + i % 5]
            assert call(port, "POST", "/v1/predict", {"inputs": batch.tolist()}).status == 200
            sent += len(batch)
        telemetry = call(port, "GET", "/v1/status").json()["telemetry"]
        # What waits is written by the shutdown alone. The writer may have committed a
        # first part: under SCHED_IDLE on a busy machine it can first run after requests
        # came, and it commits what it finds before it waits its flush interval (60 s).
        if telemetry["backlog"] == 0:  # it found them all: these wait
            for _ in range(5):
                assert call(port, "POST", "/v1/predict", {"inputs": rows.tolist()}).status == 200
                sent += len(rows)
            telemetry = call(port, "GET", "/v1/status").json()["telemetry"]
        assert telemetry["backlog"] > 0 and telemetry["written"] + telemetry["backlog"] == sent
        server.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal (the conventional exit).
        assert server.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    store = TelemetryStore(ws.config.ledger_path)
    assert store.count() == sent
    stopped = [e for e in ws.ledger.events() if e.kind == "monitor.stopped"]
    assert stopped[-1].payload["telemetry_records"] == sent
    verified = subprocess.run(
        [sys.executable, "-m", "hardenml", "monitor", "verify", "--config", str(ws.config.source)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0 and f"{sent} records" in verified.stdout
    assert json.loads(json.dumps(store.records()[0]))["source"] == "predict"
