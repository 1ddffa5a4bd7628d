"""The detectors in a child process of their own, at a lower CPU priority than the requests.

Why not a thread: every few seconds the detectors do a few hundred milliseconds of work
(the adversarial score's extra forward passes, the MMD permutations, a KS test per
feature), much of it Python holding the interpreter lock. In the service's process that
work takes the lock, and one of the two cores, from the requests, and shows as their p99.
In a forked child it takes neither the lock nor a core that a request wants: it runs at
`niceness` 10 and, with `idle_priority` on Linux, under SCHED_IDLE, only on CPU time no
other process wants (`hardenml.monitor.priority`); an evaluation that waits longer than
`max_delay_s` for its answer moves it back to the normal policy. The child is forked once,
at start, after the detectors were fitted, so it holds the same fitted detectors (and the
served model) without loading anything again; each evaluation sends it the window (a few MB
through a pipe) and gets the readings back.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import signal
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from hardenml.monitor.detectors import Detector, DetectorReading, Window
from hardenml.monitor.foreground import Foreground
from hardenml.monitor.priority import lower_this_process, raise_to_normal

log = logging.getLogger("hardenml.monitor")

PR_SET_PDEATHSIG = 1
# An evaluation's answer this long after the child may run beside requests (`max_delay_s`)
# is overdue: judging a window takes well under a second of CPU time.
STARVED_AFTER_S = 5.0
# A detector's outcome: its readings, or the message of the exception it raised.
Outcome = tuple[str, list[DetectorReading] | str]


def judge(detectors: Sequence[Detector], window: Window) -> list[Outcome]:
    """Each detector's readings of `window`; one detector's failure is its outcome and
    does not stop the others."""
    out: list[Outcome] = []
    for detector in detectors:
        try:
            out.append((detector.name, list(detector.evaluate(window))))
        except Exception as exc:
            out.append((detector.name, f"{type(exc).__name__}: {exc}"))
    return out


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the service's process ends, even while it is
    stopped (`Foreground.paused_while_busy`), when no EOF could reach it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _child(
    detectors: Sequence[Detector], conn: Connection, parent: Connection, nice: int, idle: bool
) -> None:
    parent.close()  # so the pipe ends (EOF) when the service's process is gone
    _die_with_parent()
    lower_this_process(nice, idle=idle)
    import torch

    # One thread, as DataLoader workers do: a forked child must not use the parent's
    # OpenMP pool, and the service keeps the other core. numpy's BLAS too (the MMD's
    # kernel matrices are matrix products): on two threads it runs on the service's core.
    torch.set_num_threads(1)
    with contextlib.suppress(Exception):  # threadpoolctl comes with scikit-learn
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    while True:
        try:
            window = conn.recv()
        except (EOFError, OSError):
            return
        if window is None:
            return
        conn.send(judge(detectors, window))


class DetectorProcess:
    """`detectors` evaluated in a forked child at `niceness`, under SCHED_IDLE with
    `idle_priority` (POSIX only; `available`)."""

    def __init__(
        self,
        detectors: Sequence[Detector],
        *,
        niceness: int = 10,
        idle_priority: bool = True,
        answer_within_s: float = 120.0,
        foreground: Foreground | None = None,
        max_delay_s: float = 4.0,
        starved_after_s: float = STARVED_AFTER_S,
    ) -> None:
        self.detectors = list(detectors)
        self.niceness = niceness
        self.idle_priority = idle_priority
        self._unstarved = False
        # While it judges a window the child runs between requests only (stopped while
        # one is in flight), for at most `max_delay_s` seconds, then beside them.
        self.foreground = foreground
        self.max_delay_s = max_delay_s
        self.starved_after_s = starved_after_s
        # A child that never answers (a lock a forked thread held, a stuck library) must not
        # stop the watch for good: past this, it is killed and the service judges itself.
        self.answer_within_s = answer_within_s
        self._conn: Connection | None = None
        self._process: Any = None
        self._lock = threading.Lock()

    @staticmethod
    def available() -> bool:
        return "fork" in multiprocessing.get_all_start_methods()

    def start(self) -> None:
        context = multiprocessing.get_context("fork")
        parent, child = context.Pipe()
        self._process = context.Process(
            target=_child,
            args=(self.detectors, child, parent, self.niceness, self.idle_priority),
            name="hardenml-detectors",
            daemon=True,
        )
        self._process.start()
        child.close()
        self._conn = parent

    def evaluate(self, window: Window) -> list[Outcome]:
        """The detectors' outcomes on `window`, judged in the child (in this process when
        the child is gone, with a note in the log: the watch keeps watching)."""
        with self._lock:
            if self._conn is not None:
                try:
                    with self._out_of_the_way():
                        self._conn.send(window)
                        if not self._answered(self._conn):
                            raise TimeoutError(f"no answer within {self.answer_within_s:g} s")
                        outcome: list[Outcome] = self._conn.recv()
                    return outcome
                except (EOFError, OSError, TimeoutError) as exc:
                    log.error("the detector process is gone (%s); judging in the service", exc)
                    self._stop_child()
            return judge(self.detectors, window)

    def _answered(self, conn: Connection) -> bool:
        """Whether the child answers within `answer_within_s`; one under SCHED_IDLE that has
        not answered `starved_after_s` after `max_delay_s` (starved: every core is busy) is
        moved back to the normal policy, once."""
        first = min(self.max_delay_s + self.starved_after_s, self.answer_within_s)
        if conn.poll(first):
            return True
        if self.idle_priority and not self._unstarved and self._process is not None:
            self._unstarved = True
            if raise_to_normal(self._process.pid, self.niceness):
                log.warning(
                    "the detector process got too little CPU time under SCHED_IDLE; it runs "
                    "at nice %d from now on",
                    self.niceness,
                )
            else:
                log.warning(
                    "the detector process gets little CPU time under SCHED_IDLE and this "
                    "user may not raise it back (RLIMIT_NICE); set "
                    "monitor.detector_idle_priority = false if evaluations lag"
                )
        return bool(conn.poll(self.answer_within_s - first))

    def _out_of_the_way(self) -> contextlib.AbstractContextManager[None]:
        if self.foreground is None or self._process is None or self._process.pid is None:
            return contextlib.nullcontext()
        return self.foreground.paused_while_busy(self._process.pid, max_delay_s=self.max_delay_s)

    def _stop_child(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            self._process.terminate()
            self._process.join(5.0)
            self._process = None

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(OSError):  # the child may be gone already
                    self._conn.send(None)
                self._conn.close()
                self._conn = None
            if self._process is not None:
                self._process.join(timeout)
                if self._process.is_alive():
                    self._process.terminate()
                    self._process.join(timeout)
                self._process = None
