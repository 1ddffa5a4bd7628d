"""Requests first: background work (the telemetry writer, the detectors) yields to them.

Running the background work in other processes at a lower priority was not enough on the
2-core machines this service is measured on (`bench/monitor.py`). Instrumented with one
client, the server's forward pass averaged 7.4 ms while the writer's process committed
beside it and 6.1 ms while it was idle, and the slowest requests came in clusters during
detector evaluations. (A multi-threaded BLAS matrix product beside a bare forward pass
doubled its median; a single-threaded loop did not change it.) `Foreground` counts the
requests in flight in shared memory, where a forked child reads the same counter.
Background work uses it in one of two ways:
- `wait_idle`, at points where pausing is safe: it waits for a moment with no request in
  flight, for at most a bounded time, so that under a load that never pauses the work
  still goes on. The telemetry writer does this between pieces of its drain, never inside
  a transaction.
- `paused_while_busy`, for a process that holds no lock and shares no resource (the
  detectors' child, while it judges a window): SIGSTOP when a request starts, SIGCONT
  when none is left in flight. After `max_delay_s` it is left to run, so an evaluation
  is never starved.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

# How often `wait_idle` looks at the counter: about the shortest gap between two requests
# of one client on a loopback connection.
POLL_S = 0.0005


class Foreground:
    """The requests in flight, visible to forked children; `enter`/`leave` are called
    by the request path (the event loop's thread)."""

    def __init__(self) -> None:
        self._in_flight: Any = multiprocessing.RawValue(ctypes.c_int, 0)
        self._lock = threading.RLock()
        self._pausable: int | None = None  # the pid to stop while requests run
        self._stopped = False
        self._resume_at = 0.0  # after this (monotonic), the process is left to run

    @property
    def in_flight(self) -> int:
        return int(self._in_flight.value)

    def enter(self) -> None:
        self._in_flight.value += 1
        if self._pausable is not None:
            self._signal(stop=True)

    def leave(self) -> None:
        self._in_flight.value -= 1
        if self._pausable is not None and self._in_flight.value <= 0:
            self._signal(stop=False)

    def wait_idle(self, max_wait_s: float) -> None:
        """Return once no request is in flight, or after `max_wait_s` seconds."""
        if self._in_flight.value <= 0:
            return
        deadline = time.monotonic() + max_wait_s
        while self._in_flight.value > 0 and time.monotonic() < deadline:
            time.sleep(POLL_S)

    @contextlib.contextmanager
    def paused_while_busy(self, pid: int, *, max_delay_s: float) -> Iterator[None]:
        """Within the block, process `pid` runs only while no request is in flight, and
        freely once `max_delay_s` seconds have passed; it is running when the block ends."""
        with self._lock:
            self._pausable = pid
            self._stopped = False
            self._resume_at = time.monotonic() + max_delay_s
            if self._in_flight.value > 0:
                self._signal(stop=True)
        try:
            yield
        finally:
            with self._lock:
                self._pausable = None
                if self._stopped:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGCONT)
                    self._stopped = False

    def _signal(self, *, stop: bool) -> None:
        with self._lock:
            pid = self._pausable
            if pid is None or stop == self._stopped:
                return
            if stop and time.monotonic() > self._resume_at:
                return  # it waited long enough: let it finish beside the requests
            try:
                os.kill(pid, signal.SIGSTOP if stop else signal.SIGCONT)
            except OSError:  # it is gone: nothing left to pause
                self._pausable = None
                return
            self._stopped = stop
