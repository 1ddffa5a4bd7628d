"""The background writer: takes telemetry off the request path and commits it in batches.

`submit` only puts an observation on an unbounded queue, so a burst never blocks a
request; when the writer falls behind, `backlog` grows (exported as a metric) and memory
holds the records until they are written. A failed commit (a locked database, a full disk)
is retried with backoff and the records stay queued: none is dropped. `close` drains the
queue before it returns, which is what the service's shutdown (SIGTERM) calls.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

from hardenml.monitor.telemetry import Observation, TelemetryStore

log = logging.getLogger("hardenml.monitor")

# Longest pause between two attempts at a commit that keeps failing.
MAX_RETRY_WAIT_S = 5.0
# Retention runs at most this often (it scans the batch table).
PRUNE_EVERY_S = 30.0


class TelemetryWriter:
    """Writes submitted observations to `store` in batches of at most `batch_size`, at
    least every `flush_interval_s` while any wait; hands each written batch to `on_batch`
    (the detectors' windows), in the writer's thread."""

    def __init__(
        self,
        store: TelemetryStore,
        *,
        batch_size: int,
        flush_interval_s: float,
        retention_count: int | None = None,
        retention_days: float | None = None,
        on_batch: Callable[[Sequence[Observation]], None] | None = None,
    ) -> None:
        self.store = store
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.retention_count = retention_count
        self.retention_days = retention_days
        self.on_batch = on_batch
        self.submitted_ = 0
        self.written_ = 0
        self.failures_ = 0
        self._queue: queue.SimpleQueue[Observation | None] = queue.SimpleQueue()
        self._count_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._last_prune = 0.0

    @property
    def backlog(self) -> int:
        """Records submitted but not yet committed."""
        return self.submitted_ - self.written_

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="telemetry-writer", daemon=True)
        self._thread.start()

    def submit(self, observations: Sequence[Observation]) -> None:
        with self._count_lock:
            self.submitted_ += len(observations)
        for observation in observations:
            self._queue.put(observation)

    def close(self, timeout: float | None = None) -> None:
        """Write everything submitted so far, then stop the thread."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch: list[Observation] = []
            deadline = time.monotonic() + self.flush_interval_s
            while len(batch) < self.batch_size:
                wait = deadline - time.monotonic() if batch else None
                if wait is not None and wait <= 0:
                    break
                try:
                    item = self._queue.get(timeout=wait)
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    # Everything submitted before close() is already queued: drain it.
                    batch.extend(self._drain())
                    break
                batch.append(item)
            for start in range(0, len(batch), self.batch_size):
                self._write(batch[start : start + self.batch_size])
            self._maybe_prune(force=stopping)

    def _drain(self) -> list[Observation]:
        rest: list[Observation] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return rest
            if item is not None:
                rest.append(item)

    def _write(self, batch: Sequence[Observation]) -> None:
        if not batch:
            return
        attempt = 0
        while True:
            try:
                self.store.append_batch([o.record for o in batch])
                break
            except Exception as exc:  # the database's problem: keep the records, retry
                self.failures_ += 1
                wait = min(MAX_RETRY_WAIT_S, 0.05 * 2**attempt)
                attempt += 1
                log.error("telemetry batch of %d not written (%s); retrying", len(batch), exc)
                time.sleep(wait)
        with self._count_lock:
            self.written_ += len(batch)
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
