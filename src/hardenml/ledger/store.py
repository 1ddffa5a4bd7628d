"""The event store: an append-only, hash-chained SQLite table.

Each event stores the sha256 of the event before it and its own hash over its
content, so editing, deleting or reordering any event breaks the chain where it
happened. Triggers refuse UPDATE and DELETE, a `chain_head` row records the count and
the last hash (so a truncated tail is caught too), and writers serialise on
`BEGIN IMMEDIATE`, so concurrent scans never fork the chain.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
_COLUMNS = "seq, event_id, ts, kind, actor, payload, prev_hash, hash"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY,
    event_id   TEXT NOT NULL UNIQUE,
    ts         TEXT NOT NULL,
    kind       TEXT NOT NULL,
    actor      TEXT NOT NULL,
    payload    TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chain_head (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    count INTEGER NOT NULL,
    hash  TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS events_append_only_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'hardenml ledger events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_append_only_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'hardenml ledger events are append-only'); END;
"""


class LedgerError(Exception):
    pass


def canonical_json(obj: Any) -> str:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


@dataclass(frozen=True)
class Event:
    seq: int
    event_id: str
    ts: str
    kind: str
    actor: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str

    def expected_hash(self) -> str:
        return event_hash(
            self.event_id, self.ts, self.kind, self.actor, self.payload, self.prev_hash
        )


def event_hash(
    event_id: str, ts: str, kind: str, actor: str, payload: dict[str, Any], prev_hash: str
) -> str:
    body = canonical_json(
        {
            "event_id": event_id,
            "ts": ts,
            "kind": kind,
            "actor": actor,
            "payload": payload,
            "prev_hash": prev_hash,
        }
    )
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class ChainProblem:
    seq: int
    event_id: str
    problem: str

    def __str__(self) -> str:
        return f"event #{self.seq} ({self.event_id}): {self.problem}"


@dataclass(frozen=True)
class VerifyReport:
    events: int
    head_hash: str
    problems: list[ChainProblem]

    @property
    def ok(self) -> bool:
        return not self.problems


class Ledger:
    """Open (creating if needed) the ledger at `path`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            yield conn
        finally:
            conn.close()

    def append(self, kind: str, payload: dict[str, Any], *, actor: str = "hardenml") -> Event:
        return self.append_many([(kind, payload)], actor=actor)[0]

    def append_many(
        self, items: Sequence[tuple[str, dict[str, Any]]], *, actor: str = "hardenml"
    ) -> list[Event]:
        """Append events atomically: all of them, chained in order, or none."""
        # Validate (and normalise) payloads before taking the write lock.
        bodies = [(kind, json.loads(canonical_json(payload))) for kind, payload in items]
        return self.append_derived(lambda _events: bodies, actor=actor)

    def append_derived(
        self,
        build: Callable[[list[Event]], Sequence[tuple[str, dict[str, Any]]]],
        *,
        actor: str = "hardenml",
    ) -> list[Event]:
        """Append the events `build` derives from the current ones, under the write lock.

        Reading state and writing what follows from it must be one transaction, or two
        concurrent scans would both open the same finding.
        """
        written: list[Event] = []
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                current = [
                    _event(row)
                    for row in conn.execute(f"SELECT {_COLUMNS} FROM events ORDER BY seq")
                ]
                bodies = [
                    (kind, json.loads(canonical_json(payload))) for kind, payload in build(current)
                ]
                row = conn.execute("SELECT count, hash FROM chain_head WHERE id = 1").fetchone()
                count, prev = (row[0], row[1]) if row else (0, GENESIS)
                last = conn.execute(
                    "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                if (last[0] if last else 0) != count or (last[1] if last else GENESIS) != prev:
                    raise LedgerError(
                        f"the ledger {self.path} fails its own chain head check; run "
                        "`hardenml ledger verify` before writing to it"
                    )
                for kind, payload in bodies:
                    count += 1
                    event_id = uuid.uuid4().hex
                    ts = datetime.now(UTC).isoformat(timespec="microseconds")
                    digest = event_hash(event_id, ts, kind, actor, payload, prev)
                    conn.execute(
                        f"INSERT INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (count, event_id, ts, kind, actor, canonical_json(payload), prev, digest),
                    )
                    written.append(Event(count, event_id, ts, kind, actor, payload, prev, digest))
                    prev = digest
                conn.execute(
                    "INSERT INTO chain_head (id, count, hash) VALUES (1, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET count = excluded.count, hash = excluded.hash",
                    (count, prev),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return written

    def events(self, kinds: Iterable[str] | None = None) -> list[Event]:
        wanted = set(kinds) if kinds is not None else None
        with self._connect() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM events ORDER BY seq").fetchall()
        out = []
        for seq, event_id, ts, kind, actor, payload, prev_hash, digest in rows:
            if wanted is None or kind in wanted:
                out.append(
                    Event(seq, event_id, ts, kind, actor, json.loads(payload), prev_hash, digest)
                )
        return out

    def verify(self) -> VerifyReport:
        """Walk the chain; name every event that was edited, deleted around, or moved."""
        with self._connect() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM events ORDER BY seq").fetchall()
            head = conn.execute("SELECT count, hash FROM chain_head WHERE id = 1").fetchone()
        problems: list[ChainProblem] = []
        by_hash = {row[7]: row for row in rows}
        prev_hash, prev_seq = GENESIS, 0
        for seq, event_id, ts, kind, actor, payload_text, stored_prev, stored_hash in rows:
            try:
                payload = json.loads(payload_text)
                recomputed = event_hash(event_id, ts, kind, actor, payload, stored_prev)
            except (ValueError, TypeError):
                recomputed = ""
            if recomputed != stored_hash:
                problems.append(
                    ChainProblem(
                        seq, event_id, f"edited: its content ({kind}) no longer matches its hash"
                    )
                )
            if seq != prev_seq + 1:
                problems.append(
                    ChainProblem(
                        seq,
                        event_id,
                        f"deleted before it: events #{prev_seq + 1}..#{seq - 1} are missing",
                    )
                )
            elif stored_prev != prev_hash:
                origin = by_hash.get(stored_prev)
                if origin is not None:
                    problems.append(
                        ChainProblem(
                            seq,
                            event_id,
                            f"reordered: it was written after event #{origin[0]} "
                            f"({origin[1]}), but now stands after #{prev_seq}",
                        )
                    )
                else:
                    problems.append(
                        ChainProblem(
                            seq,
                            event_id,
                            "the event it was chained to is gone or was edited "
                            "(deleted or rewritten before it)",
                        )
                    )
            prev_hash, prev_seq = stored_hash, seq
        if head is None:
            if rows:
                problems.append(ChainProblem(0, "-", "the chain head record is missing"))
        elif head[0] != prev_seq or head[1] != prev_hash:
            problems.append(
                ChainProblem(
                    head[0],
                    "-",
                    f"deleted at the end: the chain head records {head[0]} events ending in "
                    f"{head[1][:12]}, but the table ends at #{prev_seq}",
                )
            )
        return VerifyReport(len(rows), prev_hash, problems)


def _event(row: Sequence[Any]) -> Event:
    seq, event_id, ts, kind, actor, payload, prev_hash, digest = row
    return Event(seq, event_id, ts, kind, actor, json.loads(payload), prev_hash, digest)
