"""The background writer: takes telemetry off the request path and commits it in batches.

`submit` only appends a request's predictions to a queue (as `PendingRecords`: arrays;
the per-record work, fingerprints and JSON, happens in the writer's thread), so a burst
never blocks a request. The queue is bounded in memory (`max_queued`): past the bound,
records go to an append-only spill file (`hardenml.monitor.spill`) that the writer drains
after the queue, and that a restart drains before the service serves; while the file holds
records every new one follows them there, so the order of the stream is kept. `backlog`
(submitted, not yet committed, in memory or spilled) is exported as a metric. A failed
commit (a locked database, a full disk) is retried with backoff and the records stay
queued: none is dropped. `close` drains the queue and the spill file before it returns,
which is what the service's shutdown (SIGTERM) calls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from hardenml.monitor.spill import SpillFile
from hardenml.monitor.telemetry import Observation, PendingRecords, TelemetryStore

log = logging.getLogger("hardenml.monitor")

# Longest pause between two attempts at a commit that keeps failing.
MAX_RETRY_WAIT_S = 5.0
# Retention runs at most this often (it scans the batch table).
PRUNE_EVERY_S = 30.0

Submitted = PendingRecords | Sequence[Observation]


def _observations(item: Submitted) -> list[Observation]:
    return item.observations() if isinstance(item, PendingRecords) else list(item)


class TelemetryWriter:
    """Writes submitted observations to `store` in batches of at most `batch_size`, at
    least every `flush_interval_s` while any wait; hands each written batch to `on_batch`
    (the detectors' windows), in the writer's thread. At most `max_queued` records wait
    in memory; past that they wait in the file `spill_path` (None: no bound)."""

    def __init__(
        self,
        store: TelemetryStore,
        *,
        batch_size: int,
        flush_interval_s: float,
        retention_count: int | None = None,
        retention_days: float | None = None,
        on_batch: Callable[[Sequence[Observation]], None] | None = None,
        max_queued: int | None = None,
        spill_path: Path | None = None,
    ) -> None:
        if (max_queued is None) != (spill_path is None):
            raise ValueError("max_queued and spill_path go together (the bound needs the file)")
        self.store = store
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.retention_count = retention_count
        self.retention_days = retention_days
        self.on_batch = on_batch
        self.max_queued = max_queued
        self.spill = None if spill_path is None else SpillFile(spill_path)
        self.submitted_ = 0
        self.written_ = 0
        self.failures_ = 0
        self.spilled_ = 0  # records sent to the spill file, ever
        self._queue: deque[Submitted] = deque()
        self._in_memory = 0
        self._spill_pending = 0
        self._spill_offset = 0
        self._spill_resetting = False
        self._lock = threading.Condition()
        self._closing = False
        self._idle = False  # the writer waits for a first record (submit must wake it)
        self._thread: threading.Thread | None = None
        self._last_prune = 0.0

    @property
    def backlog(self) -> int:
        """Records submitted but not yet committed (in memory and in the spill file)."""
        return self.submitted_ - self.written_

    @property
    def spill_backlog(self) -> int:
        """Records waiting in the spill file."""
        return self._spill_pending

    def start(self) -> None:
        """Commit what a previous run left in the spill file, then start the thread."""
        self.recover()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="telemetry-writer", daemon=True)
        self._thread.start()

    def recover(self) -> int:
        """Write every record the spill file holds beyond its committed offset (a previous
        run's, stopped before it drained it); returns how many."""
        if self.spill is None:
            return 0
        with self._lock:
            offset = self.store.spill_offset()
            if offset > self.spill.size():  # emptied, and stopped before the offset reset
                self.store.reset_spill_offset()
                offset = 0
            if self.spill.size() == 0:
                return 0
            pending = self.spill.count_from(offset)
            # The file may also hold what this writer spilled before it started.
            left = pending - self._spill_pending
            self.submitted_ += left
            self._spill_pending = pending
            self._spill_offset = offset
        if left:
            log.warning("telemetry: writing %d records a previous run left spilled", left)
        while self._drain_spill_once():
            pass
        return left

    def submit(self, item: Submitted) -> None:
        """Queue one request's records; never waits for the database."""
        n = len(item)
        with self._lock:
            self.submitted_ += n
            full = self.max_queued is not None and self._in_memory + n > self.max_queued
            if (
                self.spill is not None
                and not self._spill_resetting
                and (self._spill_pending or full)
            ):
                self.spill.append(_observations(item))
                self._spill_pending += n
                self.spilled_ += n
            else:
                self._queue.append(item)
                self._in_memory += n
            # Wake the writer only when it waits for a first record or a batch is full:
            # a notify per request costs the request a hand-over of the interpreter lock.
            if self._idle or self._in_memory >= self.batch_size:
                self._lock.notify()

    def close(self, timeout: float | None = None) -> None:
        """Write everything submitted so far, then stop the thread."""
        if self._thread is None:
            return
        with self._lock:
            self._closing = True
            self._lock.notify()
        self._thread.join(timeout)
        self._thread = None

    def _take(self) -> tuple[list[Submitted], bool]:
        """Queued items of at least `batch_size` records, or whatever arrived within
        `flush_interval_s` of the first; and whether the writer is closing."""
        taken: list[Submitted] = []
        count = 0
        deadline: float | None = None
        with self._lock:
            while count < self.batch_size:
                if self._queue:
                    # Still counted in memory until it is committed (`_write`).
                    item = self._queue.popleft()
                    taken.append(item)
                    count += len(item)
                    if deadline is None:
                        deadline = time.monotonic() + self.flush_interval_s
                    continue
                if self._closing or (self._spill_pending and not taken):
                    break
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    break
                self._idle = not taken
                self._lock.wait(wait)
                self._idle = False
            return taken, self._closing and not self._queue

    def _run(self) -> None:
        while True:
            taken, stopping = self._take()
            batch = [o for item in taken for o in _observations(item)]
            for start in range(0, len(batch), self.batch_size):
                self._write(batch[start : start + self.batch_size])
            if not taken:
                # The queue is empty: the spill file's records are the oldest now.
                while self._drain_spill_once() and not self._queue_waiting():
                    pass
            if stopping and not self._queue_waiting():
                while self._drain_spill_once():
                    pass
                self._maybe_prune(force=True)
                return
            self._maybe_prune(force=False)

    def _queue_waiting(self) -> bool:
        with self._lock:
            return bool(self._queue)

    def _drain_spill_once(self) -> bool:
        """Commit one batch from the spill file; False when it held none. Emptied (and
        the offset reset) once everything in it is committed; no record is appended to it
        meanwhile (`_spill_resetting`)."""
        if self.spill is None or not self._spill_pending:
            return False
        observations, offset = self.spill.read(self._spill_offset, self.batch_size)
        if not observations:
            return False
        self._write(observations, spill_offset=offset)
        with self._lock:
            self._spill_offset = offset
            self._spill_pending -= len(observations)
            emptied = self._spill_pending == 0
            # While the file is emptied, a request that finds the queue full keeps its
            # records in memory (a moment over the bound) rather than wait for the disk.
            self._spill_resetting = emptied
        if emptied:
            torn = self.spill.size() - offset
            if torn > 0:
                log.warning("telemetry: %d bytes of a torn spill record discarded", torn)
            # The file first, then the offset: a crash in between leaves an offset past the
            # end of an empty file, which `recover` reads as "all committed".
            self.spill.clear()
            self.store.reset_spill_offset()
            with self._lock:
                self._spill_offset = 0
                self._spill_resetting = False
        return True

    def _write(self, batch: Sequence[Observation], *, spill_offset: int | None = None) -> None:
        if not batch:
            return
        attempt = 0
        while True:
            try:
                self.store.append_batch([o.record for o in batch], spill_offset=spill_offset)
                break
            except Exception as exc:  # the database's problem: keep the records, retry
                self.failures_ += 1
                wait = min(MAX_RETRY_WAIT_S, 0.05 * 2**attempt)
                attempt += 1
                log.error("telemetry batch of %d not written (%s); retrying", len(batch), exc)
                time.sleep(wait)
        with self._lock:
            self.written_ += len(batch)
            if spill_offset is None:
                self._in_memory -= len(batch)
        if self.on_batch is not None:
            try:
                self.on_batch(batch)
            except Exception:  # a detector's bug must not stop the telemetry
                log.exception("the detectors failed on a telemetry batch")

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
