"""The telemetry log between the request path and the database loses nothing and writes
nothing twice: frames carry fingerprints (raw inputs only when kept), a burst from many
threads is committed in order across segments, a restart commits exactly what follows the
stored position, a writer process that dies is replaced by a thread, a log that cannot
be written holds records in memory up to a bound and then refuses, and the live service
commits a previous run's leftover log before it serves."""

from __future__ import annotations

import base64
import dataclasses
import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from hardenml.monitor.build import telemetry_log_folder
from hardenml.monitor.priority import idle_supported
from hardenml.monitor.telemetry import (
    LogPosition,
    PendingRecords,
    TelemetryStore,
    fingerprint_arrays,
    input_fingerprints,
    verify_telemetry,
)
from hardenml.monitor.telemetry_log import (
    LogUnwritable,
    TelemetryLog,
    decode_frame,
    encode_frame,
    frame_lines,
)
from hardenml.monitor.writer import LogDrainer, TelemetryFull, TelemetryWriter
from monitor_support import TOKEN, TOKEN_ENV, call, monitor_workspace, serve_cli


def pending(first: int, n: int, *, client: str = "c", keep_raw: bool = False) -> PendingRecords:
    """n records of one request, numbered from `first` (the row's values say which)."""
    rows = np.arange(first, first + n, dtype=np.float32)[:, None] * np.ones((1, 4), np.float32)
    rows[:, 1] += 0.1  # a value float32 cannot hold exactly
    return PendingRecords(
        rows=rows,
        scores=np.tile([0.25, 0.75], (n, 1)),
        at=time.time(),
        model_version="m@abc",
        source="predict",
        request_ids=[f"r{first + i}" for i in range(n)],
        client_ids=[client] * n,
        latencies=[1.0] * n,
        keep_raw_inputs=keep_raw,
    )


def writer_at(tmp_path: Path, *, process: bool, segment_bytes: int = 4096) -> TelemetryWriter:
    return TelemetryWriter(
        TelemetryStore(tmp_path / "t.db"),
        TelemetryLog(tmp_path / "log", segment_bytes=segment_bytes),
        batch_size=64,
        flush_interval_s=0.05,
        max_held=100,
        process=process,
    )


def ids(store: TelemetryStore) -> list[str]:
    return [r["request_id"] for r in store.records()]


def test_a_frame_carries_fingerprints_and_raw_inputs_only_when_kept() -> None:
    request = pending(3, 4)
    frame = encode_frame(request)
    records = decode_frame(frame[:-1])
    expected = input_fingerprints(request.rows)
    assert [r.input_sha256 for r in records] == [sha for sha, _ in expected]
    assert [r.input_summary for r in records] == [summary for _, summary in expected]
    assert [r.request_id for r in records] == ["r3", "r4", "r5", "r6"]
    assert all(r.predicted == 1 and r.confidence == 0.75 and r.raw_input is None for r in records)
    # What the writer stores is each record's canonical JSON, built without the records.
    assert [line.line for line in frame_lines(frame[:-1])] == [r.as_json() for r in records]
    # No byte of an input is on disk unless the config keeps raw inputs.
    raw_bytes = base64.b64encode(request.rows.tobytes())
    assert raw_bytes not in frame
    kept = decode_frame(encode_frame(pending(3, 4, keep_raw=True))[:-1])
    assert [r.raw_input for r in kept] == request.rows.tolist()
    with pytest.raises(ValueError, match="frame version"):
        decode_frame(b'{"v": 99}')


def test_fingerprints_computed_on_the_request_path_give_the_same_frame() -> None:
    """`MonitorService.infer` hands the frame the fingerprints it computed beside the
    model call; the frame is byte for byte the one that computes them itself."""
    request = pending(7, 5)
    precomputed = dataclasses.replace(request, fingerprints=fingerprint_arrays(request.rows))
    assert encode_frame(precomputed) == encode_frame(request)


def test_a_frame_of_the_previous_version_left_in_the_log_reads_the_same() -> None:
    """Version 1 held one summary dict per input; a log that version left behind (a crash
    before its commit) must still be committed, to the same records."""
    request = pending(5, 3)
    current = orjson.loads(encode_frame(request))
    assert current["v"] == 2
    previous = current | {
        "v": 1,
        "summary": [summary for _, summary in input_fingerprints(request.rows)],
    }
    line = orjson.dumps(previous)
    assert decode_frame(line) == decode_frame(orjson.dumps(current))
    assert frame_lines(line) == frame_lines(orjson.dumps(current))


@pytest.mark.parametrize("process", [True, False], ids=["process", "thread"])
def test_a_burst_from_many_threads_is_committed_once_in_order_across_segments(
    tmp_path: Path, process: bool
) -> None:
    writer = writer_at(tmp_path, process=process)
    writer.start()
    assert writer.in_process is process

    def burst(k: int) -> None:
        for i in range(60):
            writer.submit(pending(k * 1000 + i * 5, 5, client=f"c{k}"))

    threads = [threading.Thread(target=burst, args=(k,)) for k in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    store = writer.store
    assert store.count() == 1500 == writer.written_ == writer.submitted_
    assert writer.backlog == 0
    for k in range(5):  # each thread's records in the order it sent them
        mine = [r["request_id"] for r in store.records() if r["client_id"] == f"c{k}"]
        assert mine == [f"r{k * 1000 + i}" for i in range(300)]
    # 4 kB segments: the burst rotated through many, and every committed one is gone.
    assert store.log_position().segment > 10
    assert writer.log.segments() == [store.log_position().segment]
    assert verify_telemetry(store.path).ok


def test_a_restart_commits_what_follows_the_stored_position_exactly_once(tmp_path: Path) -> None:
    crashed = writer_at(tmp_path, process=False)
    crashed.log.open_for_append()  # a run that appends but whose writer never caught up
    for k in range(20):
        crashed.submit(pending(5 * k, 5))
    drainer = LogDrainer(crashed.store, crashed.log, batch_size=30, flush_interval_s=1)
    assert drainer.drain_once() and drainer.written == 30
    # The process died while writing a frame: the torn line ends its (closed) segment.
    newest = crashed.log.path(crashed.log.segments()[-1])
    with newest.open("ab") as out:
        out.write(b'{"v": 1, "at": 0, "request_ids": ["torn"')
    restarted = writer_at(tmp_path, process=True)
    restarted.start()  # commits the 70 left before it takes a request
    assert restarted.store.count() == 100 and restarted.written_ == restarted.submitted_ == 70
    restarted.submit(pending(100, 5))
    restarted.close()
    assert ids(restarted.store) == [f"r{i}" for i in range(105)]
    assert restarted.backlog == 0 and verify_telemetry(restarted.store.path).ok


def test_a_writer_process_that_dies_is_replaced_by_a_thread_losing_and_doubling_nothing(
    tmp_path: Path,
) -> None:
    writer = writer_at(tmp_path, process=True, segment_bytes=1 << 20)
    writer.start()
    for k in range(40):
        writer.submit(pending(5 * k, 5))
    deadline = time.monotonic() + 30
    while writer.written_ < 100 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert writer._child is not None
    os.kill(writer._child.pid, signal.SIGKILL)
    while writer.in_process and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not writer.in_process
    for k in range(40, 60):
        writer.submit(pending(5 * k, 5))
    writer.close()
    assert ids(writer.store) == [f"r{i}" for i in range(300)]
    assert writer.written_ == 300 and writer.backlog == 0
    assert verify_telemetry(writer.store.path).ok


def test_a_log_that_cannot_be_written_holds_records_then_refuses_and_keeps_the_order(
    tmp_path: Path,
) -> None:
    writer = writer_at(tmp_path, process=False, segment_bytes=1)  # a new segment per frame
    writer.start()
    writer.submit(pending(0, 10))
    moved = tmp_path / "log-moved"
    (tmp_path / "log").rename(moved)
    (tmp_path / "log").write_text("not a folder")  # the next segment cannot be created
    for k in range(1, 11):  # 100 records fit in memory (max_held)
        writer.submit(pending(10 * k, 10))
    assert writer.held == 100 and writer.failures_ >= 1
    with pytest.raises(TelemetryFull, match="max_queued_records"):
        writer.submit(pending(500, 10))
    (tmp_path / "log").unlink()
    moved.rename(tmp_path / "log")
    writer.submit(pending(110, 10))  # the held frames go first
    assert writer.held == 0
    writer.close()
    assert ids(writer.store) == [f"r{i}" for i in range(120)]
    assert writer.submitted_ == writer.written_ == 120


def test_appending_to_a_log_whose_folder_is_a_file_raises_log_unwritable(tmp_path: Path) -> None:
    (tmp_path / "log").write_text("")
    log = TelemetryLog(tmp_path / "log")
    with pytest.raises(LogUnwritable, match="telemetry log"):
        log.append(encode_frame(pending(0, 1)))


def test_records_between_two_positions_counts_whole_frames(tmp_path: Path) -> None:
    log = TelemetryLog(tmp_path / "log", segment_bytes=1)
    log.open_for_append()
    for k in range(4):
        log.append(encode_frame(pending(3 * k, 3)))
    log.close()
    first, *_, last = log.segments()
    assert log.records_between(LogPosition(first, 0), LogPosition(last + 1, 0)) == 12
    assert log.records_between(LogPosition(first + 2, 0), LogPosition(last + 1, 0)) == 6


@pytest.mark.slow
def test_the_service_commits_a_previous_runs_log_before_it_serves(
    tmp_path: Path, digits_weights: Path, digits: tuple[np.ndarray, ...]
) -> None:
    ws = monitor_workspace(tmp_path / "ws", digits_weights)
    # A run that stopped before its writer committed anything: records only in the log.
    left = TelemetryLog(telemetry_log_folder(ws.config))
    left.open_for_append()
    left.append(encode_frame(pending(1000, 7)))
    left.close()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, TOKEN_ENV: TOKEN, "OMP_NUM_THREADS": "1"}
    store = TelemetryStore(ws.config.ledger_path)
    server = serve_cli(ws.config.source, port, env)
    try:
        assert store.count() == 7
        rows = digits[2][:3]
        assert call(port, "POST", "/v1/predict", {"inputs": rows.tolist()}).status == 200
        status = call(port, "GET", "/v1/status").json()["telemetry"]
        assert status["writer"] == "process" and status["held_in_memory"] == 0
        # The child commits the leftover at its niceness, then goes idle (where it can).
        expected = "idle" if idle_supported() else "nice 5"
        deadline = time.monotonic() + 10
        while status["writer_priority"] != expected and time.monotonic() < deadline:
            time.sleep(0.05)
            status = call(port, "GET", "/v1/status").json()["telemetry"]
        assert status["writer_priority"] == expected
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert store.count() == 10 and verify_telemetry(ws.config.ledger_path).ok
    shutil.rmtree(tmp_path / "ws", ignore_errors=True)
