"""The telemetry writer: the log's frames committed to the database, in a process of its own.

A request only appends one frame to the telemetry log (`TelemetryWriter.submit`, through
`hardenml.monitor.telemetry_log`). The `LogDrainer` turns frames into records, hashes
their lines and commits the batches. It runs in a child process forked at start, at
`niceness` and (with `idle_priority`, on Linux) under SCHED_IDLE, so that work takes
neither the service's interpreter lock nor the core a request wants
(`hardenml.monitor.priority`). Each time a thread of the service takes the lock back
from a busy writer thread, the wait is up to the switch interval, and a forward pass
takes the lock back after each of its operators. With the writer in a thread, that was
most of the 27 ms the service added at the 99th percentile in `bench/monitor.py`.

The child reports each commit through a pipe; `backlog` and the metrics read those reports.
A child under SCHED_IDLE that sends no report for `starved_after_s` while records wait is
starved of CPU time: it goes back to the normal policy at `niceness`. If the child dies, a
thread in the service takes over from the position the last commit stored, so nothing is
lost and nothing is written twice. `close` (the service's SIGTERM) has the drainer commit
every complete frame before it returns.

When the log cannot take a frame (a full disk, a removed folder), the frame waits in
memory and is written first at the next attempt. Once more than `max_held` records wait
that way, `submit` raises `TelemetryFull` (the service answers 503): it refuses to answer
a prediction it cannot record, rather than grow without bound.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from hardenml.monitor.foreground import Foreground
from hardenml.monitor.priority import describe, lower_this_process, raise_to_normal
from hardenml.monitor.readings import MonitorError
from hardenml.monitor.telemetry import LogPosition, PendingRecords, StoredLine, TelemetryStore
from hardenml.monitor.telemetry_log import LogUnwritable, TelemetryLog, encode_frame

log = logging.getLogger("hardenml.monitor")

# Longest pause between two attempts at a commit that keeps failing.
MAX_RETRY_WAIT_S = 5.0
# At shutdown a commit that keeps failing is given up after this many attempts: its frames
# stay in the log, and the next start commits them.
CLOSING_ATTEMPTS = 5
# The drain reads the log in pieces of this many records (about 40 microseconds of work
# each), and waits up to MAX_DEFER_S before each for a moment with no request in flight.
PIECE_RECORDS = 64
MAX_DEFER_S = 0.05
# Retention runs at most this often (it scans the batch table).
PRUNE_EVERY_S = 30.0
# A child under SCHED_IDLE that sent no report for this long while more than a batch of
# records waited is taken to be starved of CPU time (it commits every flush interval
# when it runs).
STARVED_AFTER_S = 5.0


class TelemetryFull(MonitorError):
    """The log cannot take records, and `max_held` already wait in memory."""


@dataclass(frozen=True)
class DrainerSettings:
    """What a `LogDrainer` needs; picklable, so a child process can build its own."""

    database: Path
    log_folder: Path
    segment_bytes: int
    batch_size: int
    flush_interval_s: float
    retention_count: int | None
    retention_days: float | None

    def build(self, foreground: Foreground | None = None) -> LogDrainer:
        return LogDrainer(
            TelemetryStore(self.database, keep_open=True),
            TelemetryLog(self.log_folder, segment_bytes=self.segment_bytes),
            batch_size=self.batch_size,
            flush_interval_s=self.flush_interval_s,
            retention_count=self.retention_count,
            retention_days=self.retention_days,
            foreground=foreground,
        )


class LogDrainer:
    """Commits the frames of `log` after the stored position to `store`, in batches of
    about `batch_size` records (frames are never split), at least every
    `flush_interval_s` seconds while any wait."""

    def __init__(
        self,
        store: TelemetryStore,
        log_: TelemetryLog,
        *,
        batch_size: int,
        flush_interval_s: float,
        retention_count: int | None = None,
        retention_days: float | None = None,
        foreground: Foreground | None = None,
    ) -> None:
        self.store = store
        self.log = log_
        self.foreground = foreground
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.retention_count = retention_count
        self.retention_days = retention_days
        self.position = store.log_position()
        self.written = 0
        self.failures = 0
        self._last_prune = 0.0

    def drain_once(self, *, closing: bool = False) -> bool:
        """Commit one batch; False when no complete frame waited (or, `closing`, when
        the database kept refusing it: the frames stay in the log). Between pieces of
        `PIECE_RECORDS` and before the commit it waits for a moment with no request in
        flight (`foreground`, not while closing), never inside the transaction."""
        records: list[StoredLine] = []
        after = self.position
        try:
            while len(records) < self.batch_size:
                self._yield(closing)
                piece, reached = self.log.read(after, min(PIECE_RECORDS, self.batch_size))
                if reached == after:
                    break
                records.extend(piece)
                after = reached
        except OSError as exc:  # the folder is gone or unreadable: retried next time
            self.failures += 1
            log.error("telemetry log %s cannot be read (%s); retrying", self.log.folder, exc)
            return False
        if after == self.position:
            return False
        self._yield(closing)
        if not self._commit(records, after, closing=closing):
            return False
        self.position = after
        self.written += len(records)
        try:
            self.log.remove_committed(after)
        except OSError as exc:  # committed all the same; removed at a later commit
            log.error("telemetry log: a committed segment was not removed (%s)", exc)
        return True

    def _yield(self, closing: bool) -> None:
        if self.foreground is not None and not closing:
            self.foreground.wait_idle(MAX_DEFER_S)

    def drain_all(self) -> int:
        """Commit every complete frame that waits; returns how many records."""
        before = self.written
        while self.drain_once(closing=True):
            pass
        return self.written - before

    def run(self, stop: threading.Event, on_commit: Callable[[int, LogPosition], None]) -> None:
        """Drain until `stop` is set, then commit what is left and return. `on_commit`
        gets the records written so far and the position after each commit."""
        while True:
            stopping = stop.is_set()
            committed = self.drain_once(closing=stopping)
            if committed:
                on_commit(self.written, self.position)
            if stopping and not committed:
                self._maybe_prune(force=True)
                self.store.close()
                return
            if not committed:
                stop.wait(self.flush_interval_s)
            self._maybe_prune(force=False)

    def _commit(self, records: list[StoredLine], after: LogPosition, *, closing: bool) -> bool:
        attempt = 0
        while True:
            try:
                if records:
                    self.store.append_lines(records, log_position=after)
                else:  # only skipped lines: the position moves on
                    self.store.set_log_position(after)
                return True
            except Exception as exc:  # the database's problem: the frames stay in the log
                self.failures += 1
                self.store.close()  # the next attempt opens a fresh connection
                attempt += 1
                if closing and attempt >= CLOSING_ATTEMPTS:
                    log.error(
                        "telemetry: %d records not committed at shutdown (%s); they stay "
                        "in %s and the next start commits them",
                        len(records),
                        exc,
                        self.log.folder,
                    )
                    return False
                log.error("telemetry batch of %d not written (%s); retrying", len(records), exc)
                time.sleep(min(MAX_RETRY_WAIT_S, 0.05 * 2 ** (attempt - 1)))

    def _maybe_prune(self, *, force: bool) -> None:
        if self.retention_count is None and self.retention_days is None:
            return
        now = time.monotonic()
        if not force and now - self._last_prune < PRUNE_EVERY_S:
            return
        self._last_prune = now
        max_age = None if self.retention_days is None else self.retention_days * 86400.0
        try:
            self.store.prune(max_records=self.retention_count, max_age_s=max_age)
        except Exception as exc:
            log.error("telemetry retention did not run (%s); it retries later", exc)


def _child(
    settings: DrainerSettings,
    conn: Connection,
    parent: Connection,
    niceness: int,
    idle: bool,
    foreground: Foreground | None,
) -> None:
    """The writer process: commit what a previous run left, say so, then drain until the
    service sends None or is gone (EOF), and commit the rest."""
    parent.close()  # so the pipe ends (EOF) when the service's process is gone
    lower_this_process(niceness, idle=False)
    drainer = settings.build(foreground)
    # What a previous run left is committed before the service serves, so not under
    # SCHED_IDLE: on a busy machine that would hold the service's start.
    leftover = drainer.drain_all()
    conn.send(("ready", leftover, drainer.position))
    lower_this_process(0, idle=idle)
    stop = threading.Event()

    def listen() -> None:
        with contextlib.suppress(EOFError, OSError):
            while conn.recv() is not None:
                pass
        stop.set()

    threading.Thread(target=listen, name="telemetry-listen", daemon=True).start()

    def report(written: int, position: LogPosition) -> None:
        with contextlib.suppress(OSError):
            conn.send(("written", written, position))

    drainer.run(stop, report)
    with contextlib.suppress(OSError):
        conn.send(("stopped", drainer.written, drainer.position))


class TelemetryWriter:
    """Appends each request's telemetry to `log` and has it committed to `store`: in a
    child process at `niceness` (under SCHED_IDLE with `idle_priority`) when `process`
    (and the platform can fork), else in a thread of this process."""

    def __init__(
        self,
        store: TelemetryStore,
        log_: TelemetryLog,
        *,
        batch_size: int,
        flush_interval_s: float,
        retention_count: int | None = None,
        retention_days: float | None = None,
        max_held: int = 20_000,
        process: bool = True,
        niceness: int = 5,
        idle_priority: bool = True,
        foreground: Foreground | None = None,
        starved_after_s: float = STARVED_AFTER_S,
    ) -> None:
        self.store = store
        self.foreground = foreground
        self.log = log_
        self.settings = DrainerSettings(
            database=store.path,
            log_folder=log_.folder,
            segment_bytes=log_.segment_bytes,
            batch_size=batch_size,
            flush_interval_s=flush_interval_s,
            retention_count=retention_count,
            retention_days=retention_days,
        )
        self.max_held = max_held
        self.process = process and "fork" in multiprocessing.get_all_start_methods()
        self.niceness = niceness
        self.idle_priority = idle_priority
        self.starved_after_s = starved_after_s
        self.submitted_ = 0
        self.written_ = 0
        self.failures_ = 0  # frames the log refused
        self._held: deque[tuple[bytes, int]] = deque()
        self._held_records = 0
        self._lock = threading.Lock()
        # The drainer: the child (its pipe, process and report reader), or a thread.
        self._conn: Connection | None = None
        self._child: Any = None
        self._reader: threading.Thread | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._closing = False
        self._stopped = False  # the child said it committed everything and stopped
        self._unstarved = False  # the child was moved back from SCHED_IDLE (or tried)
        self._base = 0  # records written before the current drainer's count started
        self._reported = LogPosition()

    @property
    def backlog(self) -> int:
        """Records submitted but not yet committed (in the log, or held in memory)."""
        return max(0, self.submitted_ - self.written_)

    @property
    def held(self) -> int:
        """Records waiting in memory because the log could not take them."""
        return self._held_records

    @property
    def in_process(self) -> bool:
        """Whether the drainer runs in a child process now (False: a thread)."""
        return self._conn is not None

    def start(self) -> None:
        """Commit what a previous run left in the log, then start the drainer."""
        self._closing = False
        self._stopped = False
        self._stop.clear()
        self.log.open_for_append()
        if self.process and self._start_child():
            return
        self._start_thread()

    def _start_child(self) -> bool:
        self._unstarved = False
        context = multiprocessing.get_context("fork")
        parent, child = context.Pipe()
        self._child = context.Process(
            target=_child,
            args=(
                self.settings,
                child,
                parent,
                self.niceness,
                self.idle_priority,
                self.foreground,
            ),
            name="hardenml-telemetry",
            daemon=True,
        )
        self._child.start()
        child.close()
        try:
            _, leftover, position = parent.recv()
        except (EOFError, OSError) as exc:
            log.error("the telemetry writer process did not start (%s); writing in a thread", exc)
            parent.close()
            self._reap_child()
            return False
        self._note_leftover(leftover, position)
        self._conn = parent
        self._reader = threading.Thread(target=self._read_reports, name="telemetry-reports")
        self._reader.daemon = True
        self._reader.start()
        return True

    def _start_thread(self, *, taking_over: bool = False) -> None:
        """The drainer in a thread: at start, or `taking_over` from a child that died
        (what it drains first was submitted in this run, not left by a previous one)."""
        drainer = self.settings.build(self.foreground)
        drained = drainer.drain_all()
        if taking_over:
            self.written_ += drained
            self._reported = drainer.position
        else:
            self._note_leftover(drained, drainer.position)
        self._base = self.written_ - drainer.written
        self._thread = threading.Thread(
            target=drainer.run, args=(self._stop, self._committed), name="telemetry-writer"
        )
        self._thread.daemon = True
        self._thread.start()

    def _note_leftover(self, leftover: int, position: LogPosition) -> None:
        if leftover:
            log.warning("telemetry: wrote %d records a previous run left in the log", leftover)
        self.submitted_ += leftover
        self.written_ += leftover
        self._base = self.written_ - leftover
        self._reported = position

    def _committed(self, written: int, position: LogPosition) -> None:
        self.written_ = self._base + written
        self._reported = position

    @property
    def priority(self) -> str | None:
        """The child's CPU priority ("idle", "nice 5"); None while a thread drains."""
        child = self._child
        if self._conn is None or child is None or child.pid is None:
            return None
        return describe(child.pid)

    def _read_reports(self) -> None:
        assert self._conn is not None
        conn = self._conn
        last_report = time.monotonic()
        try:
            while True:
                if not conn.poll(self.starved_after_s / 4):
                    if time.monotonic() - last_report > self.starved_after_s:
                        self._unstarve()
                        last_report = time.monotonic()
                    continue
                kind, written, position = conn.recv()
                last_report = time.monotonic()
                self._committed(written, position)
                if kind == "stopped":
                    self._stopped = True
                    return
        except (EOFError, OSError):
            pass
        if self._closing:
            return
        # The child is gone: a thread takes over where its last commit ended. Commits it
        # made after its last report count from the stored position.
        log.error("the telemetry writer process is gone; writing in a thread of the service")
        self._reap_child()
        stored = self.store.log_position()
        self.written_ += self.log.records_between(self._reported, stored)
        self._reported = stored
        self._start_thread(taking_over=True)
        conn.close()
        self._conn = None

    def _unstarve(self, *, closing: bool = False) -> None:
        """A child under SCHED_IDLE with records waiting and no commit for a while (or at
        `closing`, which must not wait on idle CPU time) goes back to the normal policy.
        Tried once per child."""
        child = self._child
        if not self.idle_priority or self._unstarved or child is None or child.pid is None:
            return
        if not closing and self.backlog <= self.settings.batch_size:
            return
        self._unstarved = True
        if not raise_to_normal(child.pid, self.niceness):
            log.warning(
                "the telemetry writer process gets little CPU time under SCHED_IDLE (%d "
                "records waiting) and this user may not raise it back (RLIMIT_NICE); set "
                "monitor.telemetry.writer_idle_priority = false if the backlog keeps growing",
                self.backlog,
            )
        elif not closing:
            log.warning(
                "the telemetry writer process got no CPU time for %g s with %d records "
                "waiting; it runs at nice %d from now on",
                self.starved_after_s,
                self.backlog,
                self.niceness,
            )

    def check_accepting(self) -> None:
        """Raise `TelemetryFull` when the log refuses frames and `max_held` records already
        wait for it in memory (a request asks before it answers)."""
        if self._held_records >= self.max_held:
            raise TelemetryFull(self._full_message())

    def _full_message(self) -> str:
        return (
            f"the telemetry log ({self.log.folder}) takes no records and "
            f"{self._held_records} wait in memory (monitor.telemetry.max_queued_records); "
            "free disk space: predictions that cannot be recorded are not answered"
        )

    def submit(self, item: PendingRecords, *, refuse_when_full: bool = True) -> None:
        """Append one request's telemetry to the log (one write into the page cache);
        never waits for the database. Raises `TelemetryFull` when the log refuses frames
        and `max_held` records already wait for it in memory, unless not
        `refuse_when_full` (the answer was sent: the records are held beyond the bound)."""
        frame = encode_frame(item)
        n = len(item)
        with self._lock:
            self._write_held()
            if not self._held:
                try:
                    self.log.append(frame)
                except LogUnwritable as exc:
                    self.failures_ += 1
                    log.error("%s; the records wait in memory", exc)
                else:
                    self.submitted_ += n
                    return
            if refuse_when_full and self._held_records + n > self.max_held:
                raise TelemetryFull(self._full_message())
            self._held.append((frame, n))
            self._held_records += n
            self.submitted_ += n

    def _write_held(self) -> None:
        while self._held:
            frame, n = self._held[0]
            try:
                self.log.append(frame)
            except LogUnwritable:
                return
            self._held.popleft()
            self._held_records -= n

    def close(self, timeout: float | None = None) -> None:
        """Commit everything submitted so far, then stop the drainer."""
        with self._lock:
            self._write_held()
            if self._held:
                log.error(
                    "telemetry: %d records could not be written to %s and are lost with "
                    "the process",
                    self._held_records,
                    self.log.folder,
                )
            self.log.close()
        self._closing = True
        if self._conn is not None:
            self._unstarve(closing=True)
            with contextlib.suppress(OSError):
                self._conn.send(None)
        # The reader ends with the child's last report, or after it took over from a
        # child that died (then the thread below drains the rest).
        if self._reader is not None:
            self._reader.join(timeout)
            self._reader = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            self._reap_child(timeout)
            if not self._stopped and self._thread is None:
                # It died before it finished: commit the rest here, from the stored position.
                log.error("the telemetry writer process stopped early; committing the rest here")
                drainer = self.settings.build()
                drainer.drain_all()
                self.written_ += self.log.records_between(self._reported, drainer.position)
        # The drainer in a thread: no fork here, or it took over from a child that died.
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout)
            self._thread = None

    def _reap_child(self, timeout: float | None = 30.0) -> None:
        if self._child is None:
            return
        self._child.join(timeout)
        if self._child.is_alive():
            self._child.terminate()
            self._child.join(5.0)
        self._child = None
