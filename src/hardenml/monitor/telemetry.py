"""Telemetry of the live service: one record per prediction, kept in batches whose digests
form a chain, in its own tables of the workspace database.

Why batches and not ledger events: the ledger reads and walks every event on each append,
which a stream of thousands of predictions per second cannot afford. A batch row carries
the sha256 of its records and a digest over that and the previous batch's digest, so an
edited, deleted or reordered record shows in `verify_telemetry` without one hash-chain
append per request. Retention deletes whole batches from the oldest end and keeps the
digest of the last one it deleted as the anchor the remaining chain starts from.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import orjson

GENESIS_DIGEST = "0" * 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS telemetry_batches (
    batch INTEGER PRIMARY KEY,
    written_at REAL NOT NULL,
    count INTEGER NOT NULL,
    records_sha256 TEXT NOT NULL,
    prev_digest TEXT NOT NULL,
    digest TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS telemetry (
    row INTEGER PRIMARY KEY,
    batch INTEGER NOT NULL,
    at REAL NOT NULL,
    request_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    model_version TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS telemetry_batch ON telemetry (batch);
CREATE TABLE IF NOT EXISTS telemetry_anchor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    batch INTEGER NOT NULL,
    digest TEXT NOT NULL,
    pruned_records INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS telemetry_log (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    segment INTEGER NOT NULL,
    byte_offset INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class TelemetryRecord:
    """What the service keeps of one prediction (or one record another service posted).

    `input_sha256` hashes the float32 bytes of the input as the model received it;
    `input_summary` is its mean, standard deviation, minimum and maximum; `scores` the
    per-class probabilities; `raw_input` the flattened input, only when the config keeps
    raw inputs. `latency_ms` is None for ingested records (the other service timed them).
    """

    request_id: str
    at: float
    client_id: str
    model_version: str
    source: Literal["predict", "ingest"]
    input_sha256: str
    input_summary: dict[str, float]
    scores: list[float]
    predicted: int
    confidence: float
    latency_ms: float | None
    raw_input: list[float] | None = None

    def as_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): the bytes the batch digest covers.
        Built field by field (`dataclasses.asdict` deep-copies) with orjson, about ten
        times faster than the standard library: this runs per record, in the writer's
        thread, which shares the interpreter lock with the requests."""
        return orjson.dumps(self.as_dict(), option=orjson.OPT_SORT_KEYS).decode()

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _RECORD_FIELDS}


_RECORD_FIELDS = tuple(f.name for f in fields(TelemetryRecord))


class StoredLine(NamedTuple):
    """One record as the store writes it: its indexed columns and its canonical JSON
    (`TelemetryRecord.as_json`)."""

    at: float
    request_id: str
    client_id: str
    model_version: str
    line: str

    @classmethod
    def of(cls, record: TelemetryRecord) -> StoredLine:
        return cls(
            record.at, record.request_id, record.client_id, record.model_version, record.as_json()
        )


@dataclass(frozen=True, order=True)
class LogPosition:
    """How far the telemetry log (`hardenml.monitor.telemetry_log`) is committed: a byte
    `offset` into its segment number `segment`."""

    segment: int = 0
    offset: int = 0


@dataclass(frozen=True)
class PendingRecords:
    """The predictions of one request as the request path hands them to the writer:
    arrays and the request's facts. They reach the telemetry log as one frame
    (`hardenml.monitor.telemetry_log.encode_frame`); the writer process turns each frame
    into one `TelemetryRecord` per row.

    `rows`: the inputs `(n, d)` as the model received them; `scores`: probabilities
    `(n, k)`; `request_ids`, `client_ids`, `latencies`: one per row; `fingerprints`:
    `fingerprint_arrays(rows)` when the request path computed them already (None: the
    frame's encoding computes them)."""

    rows: np.ndarray = field(repr=False)
    scores: np.ndarray = field(repr=False)
    at: float
    model_version: str
    source: Literal["predict", "ingest"]
    request_ids: Sequence[str]
    client_ids: Sequence[str]
    latencies: Sequence[float | None]
    keep_raw_inputs: bool = False
    fingerprints: tuple[list[str], np.ndarray] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.rows.shape[0])


SUMMARY_FIELDS = ("mean", "std", "min", "max")


def fingerprint_arrays(rows: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The sha256 of each row's float32 bytes, and the rows' summaries as one `(n, 4)`
    float64 array of `SUMMARY_FIELDS` (float32 statistics, widened): the request path's
    form, with no dict per row."""
    flat = np.ascontiguousarray(rows, dtype=np.float32).reshape(rows.shape[0], -1)
    stats = np.stack(
        [flat.mean(axis=1), flat.std(axis=1), flat.min(axis=1), flat.max(axis=1)], axis=1
    ).astype(np.float64)
    # A C-contiguous row is a buffer of exactly its float32 bytes: no copy to hash it.
    return [hashlib.sha256(row.data).hexdigest() for row in flat], stats


def summary_dict(values: Sequence[float]) -> dict[str, float]:
    """One row of `fingerprint_arrays`' summaries as the record stores it."""
    return dict(zip(SUMMARY_FIELDS, values, strict=True))


def input_fingerprints(rows: np.ndarray) -> list[tuple[str, dict[str, float]]]:
    """(sha256 of the float32 bytes, {mean, std, min, max}) for each row of `rows`
    (shape `(n, d)`), the summary computed for the whole batch at once."""
    digests, stats = fingerprint_arrays(rows)
    return [(sha, summary_dict(s)) for sha, s in zip(digests, stats.tolist(), strict=True)]


def batch_digest(prev_digest: str, batch: int, count: int, records_sha256: str) -> str:
    """The chained digest of one batch: what it holds, where it sits, and what came before."""
    body = f"{prev_digest}|{batch}|{count}|{records_sha256}"
    return hashlib.sha256(body.encode()).hexdigest()


def records_digest(lines: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode())
        digest.update(b"\n")
    return digest.hexdigest()


@dataclass(frozen=True)
class TelemetryProblem:
    batch: int
    what: str

    def __str__(self) -> str:
        return f"telemetry batch {self.batch}: {self.what}"


@dataclass(frozen=True)
class TelemetryVerifyReport:
    batches: int
    records: int
    pruned_records: int
    problems: list[TelemetryProblem]

    @property
    def ok(self) -> bool:
        return not self.problems


class TelemetryStore:
    """The telemetry tables in the SQLite file at `path` (the workspace ledger's file).
    Each method opens its own connection, so the writer and readers never share one; the
    writer's store (`keep_open`) keeps its one connection between batches."""

    def __init__(self, path: Path, *, keep_open: bool = False) -> None:
        self.path = Path(path)
        # The writer's store keeps one connection (its schema script run once); readers
        # open their own per call.
        self.keep_open = keep_open
        self._conn: sqlite3.Connection | None = None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if self.keep_open:
            if self._conn is None:
                self._conn = self._open()
            yield self._conn
            return
        conn = self._open()
        try:
            yield conn
        finally:
            conn.close()

    def _open(self) -> sqlite3.Connection:
        # One thread at a time uses a kept connection, not always the one that opened it
        # (a writer thread can take over from a writer process's first drain).
        conn = sqlite3.connect(
            self.path, timeout=60.0, isolation_level=None, check_same_thread=False
        )
        try:
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        """Close the kept connection (a later call opens another)."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    def append_batch(
        self, records: Sequence[TelemetryRecord], *, log_position: LogPosition | None = None
    ) -> int:
        """`append_lines` for records."""
        return self.append_lines([StoredLine.of(r) for r in records], log_position=log_position)

    def append_lines(
        self, records: Sequence[StoredLine], *, log_position: LogPosition | None = None
    ) -> int:
        """Write `records` as one batch chained to the last; returns the batch number.
        `log_position`: the records came from the telemetry log, which is committed up to
        there in the same transaction (so a restart re-reads none of them)."""
        lines = [r.line for r in records]
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                last = conn.execute(
                    "SELECT batch, digest FROM telemetry_batches ORDER BY batch DESC LIMIT 1"
                ).fetchone()
                if last is None:
                    anchor = conn.execute(
                        "SELECT batch, digest FROM telemetry_anchor WHERE id = 1"
                    ).fetchone()
                    last = anchor if anchor is not None else (0, GENESIS_DIGEST)
                batch, prev = int(last[0]) + 1, str(last[1])
                content = records_digest(lines)
                conn.execute(
                    "INSERT INTO telemetry_batches VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        batch,
                        time.time(),
                        len(lines),
                        content,
                        prev,
                        batch_digest(prev, batch, len(lines), content),
                    ),
                )
                conn.executemany(
                    "INSERT INTO telemetry (batch, at, request_id, client_id, model_version, "
                    "record) VALUES (?, ?, ?, ?, ?, ?)",
                    [(batch, *r) for r in records],
                )
                if log_position is not None:
                    _set_log_position(conn, log_position)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return batch

    def prune(self, *, max_records: int | None, max_age_s: float | None) -> int:
        """Delete whole batches from the oldest end while more than `max_records` records
        remain, or while the oldest batch is older than `max_age_s`; returns how many
        records went. The newest batch is never deleted (the chain's head stays)."""
        removed = 0
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                batches = conn.execute(
                    "SELECT batch, written_at, count, digest FROM telemetry_batches ORDER BY batch"
                ).fetchall()
                total = sum(int(b[2]) for b in batches)
                cutoff = None if max_age_s is None else time.time() - max_age_s
                doomed: list[tuple[int, str, int]] = []
                for batch, written_at, count, digest in batches[:-1]:
                    too_many = max_records is not None and total > max_records
                    too_old = cutoff is not None and written_at < cutoff
                    if not (too_many or too_old):
                        break
                    doomed.append((int(batch), str(digest), int(count)))
                    total -= int(count)
                if doomed:
                    last_batch, last_digest, _ = doomed[-1]
                    removed = sum(c for _, _, c in doomed)
                    conn.execute("DELETE FROM telemetry WHERE batch <= ?", (last_batch,))
                    conn.execute("DELETE FROM telemetry_batches WHERE batch <= ?", (last_batch,))
                    before = conn.execute(
                        "SELECT pruned_records FROM telemetry_anchor WHERE id = 1"
                    ).fetchone()
                    conn.execute(
                        "INSERT INTO telemetry_anchor (id, batch, digest, pruned_records) "
                        "VALUES (1, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET batch = "
                        "excluded.batch, digest = excluded.digest, pruned_records = "
                        "excluded.pruned_records",
                        (last_batch, last_digest, removed + (int(before[0]) if before else 0)),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return removed

    def log_position(self) -> LogPosition:
        """How far the telemetry log is committed (its start when nothing was)."""
        if not self.path.exists():
            return LogPosition()
        with self._connect() as conn:
            row = conn.execute(
                "SELECT segment, byte_offset FROM telemetry_log WHERE id = 1"
            ).fetchone()
        return LogPosition() if row is None else LogPosition(int(row[0]), int(row[1]))

    def set_log_position(self, position: LogPosition) -> None:
        """Store that the log is committed up to `position` (lines skipped, no records)."""
        with self._connect() as conn:
            _set_log_position(conn, position)

    def count(self) -> int:
        if not self.path.exists():
            return 0
        with self._connect() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM telemetry").fetchone()[0])

    def records(self, *, limit: int | None = None) -> list[dict[str, Any]]:
        """The stored records, oldest first (the newest `limit` when given)."""
        with self._connect() as conn:
            if limit is None:
                rows = conn.execute("SELECT record FROM telemetry ORDER BY row").fetchall()
            else:
                rows = conn.execute(
                    "SELECT record FROM (SELECT row, record FROM telemetry ORDER BY row DESC "
                    "LIMIT ?) ORDER BY row",
                    (limit,),
                ).fetchall()
        return [json.loads(r[0]) for r in rows]


def _set_log_position(conn: sqlite3.Connection, position: LogPosition) -> None:
    conn.execute(
        "INSERT INTO telemetry_log (id, segment, byte_offset) VALUES (1, ?, ?) ON "
        "CONFLICT(id) DO UPDATE SET segment = excluded.segment, byte_offset = "
        "excluded.byte_offset",
        (position.segment, position.offset),
    )


def verify_telemetry(path: Path) -> TelemetryVerifyReport:
    """Walk the telemetry chain in the database at `path`: every batch's records must hash
    to its `records_sha256`, every digest must follow from the one before (from the anchor
    retention left, or the genesis digest), and batch numbers must run without gaps."""
    store = TelemetryStore(path)
    problems: list[TelemetryProblem] = []
    with store._connect() as conn:
        conn.execute("BEGIN")
        try:
            batches = conn.execute(
                "SELECT batch, count, records_sha256, prev_digest, digest FROM "
                "telemetry_batches ORDER BY batch"
            ).fetchall()
            rows = conn.execute("SELECT batch, record FROM telemetry ORDER BY row").fetchall()
            anchor = conn.execute(
                "SELECT batch, digest, pruned_records FROM telemetry_anchor WHERE id = 1"
            ).fetchone()
        finally:
            conn.execute("COMMIT")
    by_batch: dict[int, list[str]] = {}
    for batch, record in rows:
        by_batch.setdefault(int(batch), []).append(str(record))
    expected_batch, prev = (0, GENESIS_DIGEST) if anchor is None else (int(anchor[0]), anchor[1])
    for batch, count, content, prev_digest, digest in batches:
        expected_batch += 1
        if batch != expected_batch:
            problems.append(TelemetryProblem(batch, f"expected batch {expected_batch} here"))
            expected_batch = batch
        lines = by_batch.pop(int(batch), [])
        if len(lines) != count:
            problems.append(TelemetryProblem(batch, f"holds {len(lines)} records, not {count}"))
        if records_digest(lines) != content:
            problems.append(TelemetryProblem(batch, "its records were changed"))
        if prev_digest != prev:
            problems.append(TelemetryProblem(batch, "does not follow the batch before it"))
        if batch_digest(prev_digest, batch, count, content) != digest:
            problems.append(TelemetryProblem(batch, "its digest does not match its contents"))
        prev = digest
    for batch in sorted(by_batch):
        problems.append(TelemetryProblem(batch, "records without a batch row"))
    return TelemetryVerifyReport(
        batches=len(batches),
        records=len(rows),
        pruned_records=0 if anchor is None else int(anchor[2]),
        problems=problems,
    )
