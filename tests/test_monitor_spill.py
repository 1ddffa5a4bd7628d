"""The telemetry queue is bounded in memory and loses nothing: past the bound records go
to the spill file, which the writer drains in order, SIGTERM flushes, and a restart
commits (exactly once) before it serves."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from hardenml.monitor.build import spill_path
from hardenml.monitor.telemetry import (
    Observation,
    PendingRecords,
    TelemetryStore,
    verify_telemetry,
)
from hardenml.monitor.writer import TelemetryWriter
from monitor_support import TOKEN, TOKEN_ENV, call, monitor_workspace, serve_cli


def pending(first: int, n: int) -> PendingRecords:
    """n records of one request, numbered from `first`."""
    rows = np.arange(first, first + n, dtype=np.float32)[:, None] * np.ones((1, 4), np.float32)
    return PendingRecords(
        rows=rows,
        scores=np.tile([0.25, 0.75], (n, 1)),
        at=time.time(),
        model_version="m@abc",
        source="predict",
        request_ids=[f"r{first + i}" for i in range(n)],
        client_ids=["c"] * n,
        latencies=[1.0] * n,
    )


def writer_at(
    tmp_path: Path,
    *,
    max_queued: int,
    on_batch: Callable[[Sequence[Observation]], None] | None = None,
) -> TelemetryWriter:
    return TelemetryWriter(
        TelemetryStore(tmp_path / "t.db"),
        batch_size=64,
        flush_interval_s=0.05,
        max_queued=max_queued,
        spill_path=tmp_path / "spill.jsonl",
        on_batch=on_batch,
    )


def test_a_burst_past_the_bound_spills_and_every_record_is_written_in_order(
    tmp_path: Path,
) -> None:
    seen: list[int] = []
    stalled, resume = threading.Event(), threading.Event()

    def slow_detectors(batch: Sequence[Observation]) -> None:
        seen.extend(int(o.row[0]) for o in batch)
        stalled.set()
        resume.wait()

    writer = writer_at(tmp_path, max_queued=100, on_batch=slow_detectors)
    writer.start()
    writer.submit(pending(0, 10))
    assert stalled.wait(30)
    # The writer is held up (in the detectors' hand-off): 100 records fit in memory, the
    # rest of the burst goes to the spill file, and the backlog counts both.
    for k in range(1, 50):
        writer.submit(pending(10 * k, 10))
    assert writer.backlog == 490 and writer.spill_backlog == 390
    assert (tmp_path / "spill.jsonl").stat().st_size > 0
    resume.set()
    for k in range(50, 120):
        writer.submit(pending(10 * k, 10))
    writer.close()
    store = writer.store
    assert store.count() == 1200 == writer.written_
    assert writer.backlog == 0 and writer.spill_backlog == 0 and writer.spilled_ >= 390
    assert [r["request_id"] for r in store.records()] == [f"r{i}" for i in range(1200)]
    # The detectors' window got the spilled records too, rows read back from the file.
    assert seen == list(range(1200))
    assert writer.spill is not None and writer.spill.size() == 0
    assert store.spill_offset() == 0 and verify_telemetry(store.path).ok


def test_a_restart_commits_what_the_spill_file_holds_exactly_once(tmp_path: Path) -> None:
    crashed = writer_at(tmp_path, max_queued=1)
    for k in range(20):
        crashed.submit(pending(5 * k, 5))  # 5 > 1: every request goes to the file
    # One batch drained and committed, then the process died (no close): the committed
    # offset tells the next run where to start; a torn last line is not a record.
    assert crashed._drain_spill_once()
    assert crashed.written_ == 64
    with (tmp_path / "spill.jsonl").open("ab") as out:
        out.write(b'{"record": {"request_id": "torn"')
    restarted = writer_at(tmp_path, max_queued=1)
    assert restarted.recover() == 100 - 64
    assert restarted.store.count() == 100 and restarted.backlog == 0
    assert [r["request_id"] for r in restarted.store.records()] == [f"r{i}" for i in range(100)]
    assert (tmp_path / "spill.jsonl").stat().st_size == 0
    assert verify_telemetry(restarted.store.path).ok


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=60) in (0, -signal.SIGTERM)


@pytest.mark.slow
def test_the_service_spills_a_burst_flushes_it_on_sigterm_and_drains_it_on_restart(
    tmp_path: Path, digits_weights: Path, digits: tuple[np.ndarray, ...]
) -> None:
    # Nothing is written before SIGTERM (long interval, huge batches), and at most 12
    # records wait in memory: most of the burst is in the spill file when the signal comes.
    ws = monitor_workspace(
        tmp_path / "ws",
        digits_weights,
        monitor="detectors = []\n[monitor.telemetry]\nbatch_size = 100000\n"
        "flush_interval_s = 60\nmax_queued_records = 12\n",
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, TOKEN_ENV: TOKEN, "OMP_NUM_THREADS": "1"}
    rows = digits[2][:30]
    sent = 0
    server = serve_cli(ws.config.source, port, env)
    try:
        for i in range(40):
            batch = rows[: 1 + i % 5]
            assert call(port, "POST", "/v1/predict", {"inputs": batch.tolist()}).status == 200
            sent += len(batch)
        status = call(port, "GET", "/v1/status").json()["telemetry"]
        assert status["written"] == 0 and status["backlog"] == sent
        assert status["spilled"] >= sent - 12
        scrape = call(port, "GET", "/metrics").body.decode()
        assert f"hardenml_telemetry_spilled_records {float(status['spilled'])}" in scrape
        _stop(server)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    store = TelemetryStore(ws.config.ledger_path)
    assert store.count() == sent and spill_path(ws.config).stat().st_size == 0

    # A run that stopped before draining its spill file (records only on disk): the next
    # one commits them before it answers its first request.
    left = TelemetryWriter(
        store, batch_size=64, flush_interval_s=1, max_queued=1, spill_path=spill_path(ws.config)
    )
    left.submit(pending(1000, 7))
    assert spill_path(ws.config).stat().st_size > 0
    server = serve_cli(ws.config.source, port, env)
    try:
        assert store.count() == sent + 7
        assert call(port, "POST", "/v1/predict", {"inputs": rows[:3].tolist()}).status == 200
        _stop(server)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert store.count() == sent + 7 + 3
    assert verify_telemetry(ws.config.ledger_path).ok


def test_an_offset_past_an_emptied_file_reads_as_all_committed(tmp_path: Path) -> None:
    # A run emptied the file and stopped before it reset the offset: nothing is pending,
    # and what the next run spills is read from the file's start.
    store = TelemetryStore(tmp_path / "t.db")
    store.append_batch([pending(0, 1).observations()[0].record], spill_offset=5000)
    (tmp_path / "spill.jsonl").write_bytes(b"")
    writer = writer_at(tmp_path, max_queued=1)
    assert writer.recover() == 0 and store.spill_offset() == 0
    writer.submit(pending(10, 4))
    writer.start()
    writer.close()
    assert store.count() == 1 + 4 and writer.backlog == 0
