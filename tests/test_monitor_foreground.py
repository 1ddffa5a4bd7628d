"""Background work yields to requests: `Foreground` counts the requests in flight where a
forked child can read it, stops a pausable process while any is in flight (for a bounded
time), and the telemetry writer waits for gaps between requests without ever stalling."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from hardenml.monitor.foreground import Foreground
from hardenml.monitor.telemetry import PendingRecords, TelemetryStore
from hardenml.monitor.telemetry_log import TelemetryLog, encode_frame
from hardenml.monitor.writer import MAX_DEFER_S, LogDrainer


def state(pid: int) -> str:
    """The process's scheduler state letter (T: stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def wait_for_state(pid: int, wanted: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while (now := state(pid)) != wanted and time.monotonic() < deadline:
        time.sleep(0.005)
    return now


def _spin(stop: object) -> None:
    while not stop.is_set():  # type: ignore[attr-defined]
        time.sleep(0.001)


def test_a_child_sees_the_requests_in_flight_and_waits_for_a_gap() -> None:
    foreground = Foreground()
    seen = multiprocessing.get_context("fork").Queue()

    def child() -> None:
        began = time.monotonic()
        foreground.wait_idle(30.0)
        seen.put(time.monotonic() - began)

    foreground.enter()
    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    time.sleep(0.3)
    foreground.leave()  # the gap the child waited for
    waited = seen.get(timeout=10)
    process.join(10)
    assert 0.25 < waited < 5.0 and foreground.in_flight == 0
    # Never longer than asked, however busy.
    foreground.enter()
    began = time.monotonic()
    foreground.wait_idle(0.05)
    assert 0.04 < time.monotonic() - began < 1.0
    foreground.leave()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_pausable_process_is_stopped_while_requests_run_and_freed_after_its_delay() -> None:
    context = multiprocessing.get_context("fork")
    stop = context.Event()
    process = context.Process(target=_spin, args=(stop,), daemon=True)
    process.start()
    assert process.pid is not None
    foreground = Foreground()
    try:
        with foreground.paused_while_busy(process.pid, max_delay_s=1.0):
            foreground.enter()
            assert wait_for_state(process.pid, "T") == "T"
            foreground.enter()  # a second request: still stopped, no second signal
            foreground.leave()
            assert state(process.pid) == "T"
            foreground.leave()  # none left in flight: it runs
            assert wait_for_state(process.pid, "S") != "T"
            time.sleep(1.1)  # past its delay: requests no longer stop it
            foreground.enter()
            time.sleep(0.05)
            assert state(process.pid) != "T"
            foreground.leave()
        # Stopped at the block's end? It is continued.
        with foreground.paused_while_busy(process.pid, max_delay_s=5.0):
            foreground.enter()
            assert wait_for_state(process.pid, "T") == "T"
        assert wait_for_state(process.pid, "S") != "T"
        foreground.leave()
    finally:
        os.kill(process.pid, signal.SIGCONT)
        stop.set()
        process.join(10)
    assert process.exitcode == 0


def test_the_writer_drains_while_requests_never_pause_only_a_little_later(
    tmp_path: Path,
) -> None:
    log = TelemetryLog(tmp_path / "log")
    log.open_for_append()
    for k in range(8):
        rows = np.full((32, 4), k, np.float32)
        log.append(
            encode_frame(
                PendingRecords(
                    rows=rows,
                    scores=np.tile([0.5, 0.5], (32, 1)),
                    at=0.0,
                    model_version="m",
                    source="predict",
                    request_ids=[f"r{k}-{i}" for i in range(32)],
                    client_ids=["c"] * 32,
                    latencies=[1.0] * 32,
                )
            )
        )
    foreground = Foreground()
    foreground.enter()  # a request that never ends
    drainer = LogDrainer(
        TelemetryStore(tmp_path / "t.db"),
        log,
        batch_size=256,
        flush_interval_s=0.01,
        foreground=foreground,
    )
    began = time.monotonic()
    assert drainer.drain_once() and drainer.written == 256
    # Four pieces of 64 and the commit, each after at most MAX_DEFER_S of waiting.
    assert 4 * MAX_DEFER_S <= time.monotonic() - began < 5.0
    foreground.leave()
    began = time.monotonic()
    assert not drainer.drain_once() and time.monotonic() - began < 0.5
