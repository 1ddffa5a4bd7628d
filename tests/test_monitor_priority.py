"""Background processes under SCHED_IDLE: the writer's and the detectors' children run at
the idle priority, and one that is starved of CPU time (here: stopped with SIGSTOP, which
a starved process looks like from outside) is moved back to its niceness, without losing
a record or an evaluation."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from hardenml.monitor.detector_process import DetectorProcess
from hardenml.monitor.detectors import DetectorReading, Window
from hardenml.monitor.priority import describe, idle_supported, lower_this_process, raise_to_normal
from hardenml.monitor.telemetry import TelemetryStore
from hardenml.monitor.telemetry_log import TelemetryLog
from hardenml.monitor.writer import TelemetryWriter
from test_monitor_telemetry_log import pending

pytestmark = pytest.mark.skipif(
    not idle_supported() or "fork" not in multiprocessing.get_all_start_methods(),
    reason="needs Linux's SCHED_IDLE and fork",
)


def _may_raise() -> bool:
    """Whether this user may move a process from SCHED_IDLE back to nice 7."""
    import resource

    return os.geteuid() == 0 or resource.getrlimit(resource.RLIMIT_NICE)[0] >= 20 - 7


def _sleep_lowered(ready: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    lower_this_process(3, idle=True)
    ready.set()
    time.sleep(30)


def test_a_lowered_process_runs_idle_and_goes_back_to_its_niceness_when_raised() -> None:
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    child = context.Process(target=_sleep_lowered, args=(ready,), daemon=True)
    child.start()
    try:
        assert ready.wait(10)
        assert describe(child.pid) == "idle"
        raised = raise_to_normal(child.pid, 7)
        assert raised == _may_raise()
        assert describe(child.pid) == ("nice 7" if raised else "idle")
        assert raise_to_normal(child.pid, 7) == raised  # already normal: nothing to do
    finally:
        child.kill()
        child.join(5)
    assert raise_to_normal(child.pid, 7) is False  # it is gone
    assert describe(child.pid) == "unknown"


def _until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


@pytest.mark.skipif(not _may_raise(), reason="this user may not leave SCHED_IDLE")
def test_a_starved_writer_is_raised_to_its_niceness_once_records_pile_up(
    tmp_path: Path,
) -> None:
    store = TelemetryStore(tmp_path / "t.db")
    writer = TelemetryWriter(
        store,
        TelemetryLog(tmp_path / "log"),
        batch_size=4,
        flush_interval_s=0.05,
        niceness=6,
        idle_priority=True,
        starved_after_s=0.3,
    )
    writer.start()
    # It commits what a previous run left at its niceness, then goes idle.
    assert _until(lambda: writer.priority == "idle")
    pid = writer._child.pid
    os.kill(pid, signal.SIGSTOP)  # no CPU time at all: what starvation looks like
    try:
        writer.submit(pending(0, 3))
        time.sleep(1.0)  # starved, but no more than a batch waits: nothing to hurry
        assert writer.priority == "idle"
        for i in range(1, 4):
            writer.submit(pending(4 * i, 4))
        assert _until(lambda: writer.priority == "nice 6")
    finally:
        os.kill(pid, signal.SIGCONT)
    writer.close()
    assert store.count() == 15 == writer.written_


class Pid:
    name = "pid"

    def evaluate(self, window: Window) -> list[DetectorReading]:
        n = len(window.flat_inputs(self.name))
        reading = DetectorReading(
            detector=self.name,
            feature=None,
            statistic=0.0,
            p_value=None,
            flagged=False,
            n=n,
            detail=str(os.getpid()),
        )
        return [reading]


@pytest.mark.skipif(not _may_raise(), reason="this user may not leave SCHED_IDLE")
def test_an_overdue_evaluation_raises_the_detector_process_and_still_answers() -> None:
    process = DetectorProcess([Pid()], niceness=9, max_delay_s=0.0, starved_after_s=0.3)
    process.start()
    pid = process._process.pid
    outcome: list[object] = []
    try:
        assert _until(lambda: describe(pid) == "idle")  # the child lowers itself as it starts
        os.kill(pid, signal.SIGSTOP)
        judging = threading.Thread(
            target=lambda: outcome.extend(process.evaluate(Window(inputs=np.zeros((20, 3)))))
        )
        judging.start()
        assert _until(lambda: describe(pid) == "nice 9")
        os.kill(pid, signal.SIGCONT)
        judging.join(10)
    finally:
        process.close()
    ((name, readings),) = outcome
    assert name == "pid" and not isinstance(readings, str)
    assert int(readings[0].detail) == pid  # judged in the child
