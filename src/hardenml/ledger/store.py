"""The event store: an append-only, hash-chained SQLite table.

Each event stores the sha256 of the event before it and its own hash over its
content, so editing, deleting or reordering any event breaks the chain where it
happened. Triggers refuse UPDATE and DELETE, a `chain_head` row records the count and
the last hash (so a truncated tail is caught too), and writers serialise on
`BEGIN IMMEDIATE`, so concurrent scans never fork the chain.

Nothing is handed out unverified: every read walks the chain first and raises
`LedgerTamperedError` when it is broken, so no state (findings, runs, releases) and no
gate decision is ever derived from an edited ledger. A file that is no ledger at all
(empty, truncated, overwritten, not SQLite) is a `LedgerError` naming it and the fix.
Reads open the file so that they cannot write (a read-only folder serves them); the
first write creates the file, schema included, in one atomic step.
"""

from __future__ import annotations

import hashlib
import json
import os
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


_SQLITE_MAGIC = b"SQLite format 3\x00"
_TABLES = ("chain_head", "events")
_RECOVERY = (
    "restore it from a backup, or move it aside to start a new, empty ledger (its history "
    "is then lost)"
)


class LedgerError(Exception):
    """The ledger cannot be used as asked; the message names the file and the fix."""


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

    @property
    def head(self) -> ChainHead:
        return ChainHead(self.events, self.head_hash)


@dataclass(frozen=True)
class ChainHead:
    """The chain as it stood when it was read and verified: how many events, and the hash
    of the last one (`GENESIS` for none). The next event written is chained to `hash`."""

    events: int
    hash: str

    def as_dict(self) -> dict[str, Any]:
        return {"events": self.events, "head_hash": self.hash}


class LedgerTamperedError(LedgerError):
    """The hash chain is broken: an event was edited, deleted or moved. `report` names each."""

    def __init__(self, path: Path, report: VerifyReport) -> None:
        self.path = path
        self.report = report
        shown = "; ".join(str(p) for p in report.problems[:3])
        more = f" (and {len(report.problems) - 3} more)" if len(report.problems) > 3 else ""
        super().__init__(
            f"the ledger {path} fails its hash-chain check, so nothing in it can be trusted: "
            f"{shown}{more}. Run `hardenml ledger verify` to see every problem, and restore "
            "the ledger from a backup"
        )


class Ledger:
    """The ledger at `path`. An existing file is checked to be a hardenml ledger now (so a
    damaged one is refused before any work); a missing one reads as empty and is created
    by the first write."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if self.path.exists():
            self._check_file()

    # --- files and connections ---------------------------------------------------------

    def _check_file(self) -> None:
        if not self.path.is_file():
            raise LedgerError(
                f"the ledger {self.path} is not a file; point ledger.path in hardenml.toml "
                "at a ledger file (or a path where one may be created)"
            )
        try:
            with self.path.open("rb") as fh:
                magic = fh.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise self._os_error("read", exc) from None
        if not magic:
            raise self._unusable("is empty (0 bytes)")
        if magic != _SQLITE_MAGIC:
            raise self._unusable("is not an SQLite database")
        with self._reader() as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        if not set(_TABLES) <= tables:
            raise self._unusable(
                f"is an SQLite database without a ledger's tables {list(_TABLES)} "
                f"(it has {sorted(tables)})"
            )

    def _unusable(self, what: str) -> LedgerError:
        return LedgerError(
            f"the ledger {self.path} {what}: it is not a hardenml ledger (damaged, truncated "
            f"or overwritten); {_RECOVERY}"
        )

    def _read_only(self) -> LedgerError:
        return LedgerError(
            f"the ledger {self.path} cannot be written: it or its folder {self.path.parent} is "
            "read-only, and this command records events. Make both writable (commands that "
            "only read, such as `findings list` and `ledger verify`, work as they are)"
        )

    def _writable(self) -> bool:
        """Whether this process may write the file and the journal files beside it."""
        folder = self.path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        file_ok = not self.path.exists() or os.access(self.path, os.W_OK)
        return file_ok and os.access(folder, os.W_OK)

    def _os_error(self, doing: str, exc: OSError) -> LedgerError:
        return LedgerError(
            f"the ledger {self.path} cannot be {doing}: {exc.strerror or exc}; check the path "
            "and its permissions (ledger.path in hardenml.toml)"
        )

    @contextmanager
    def _sqlite_errors(self, doing: str) -> Iterator[None]:
        """SQLite's errors as a `LedgerError` that names the file and the fix."""
        try:
            yield
        except sqlite3.Error as exc:
            code = getattr(exc, "sqlite_errorname", "")
            if doing != "read" and code.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")):
                raise self._read_only() from None
            if code.startswith("SQLITE_BUSY"):
                raise LedgerError(
                    f"the ledger {self.path} stayed locked by another writer for 60 s; "
                    "retry once the other hardenml command has finished"
                ) from None
            raise self._unusable(f"cannot be {doing} (SQLite: {exc})") from None

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """A connection that cannot write. Where we could write, `query_only` on a normal
        connection (SQLite keeps managing its journal files); else opened read-only, and
        immutable when the folder is read-only too, since SQLite cannot make its WAL index
        there and no one can be writing."""
        uri = self.path.resolve().as_uri()
        with self._sqlite_errors("read"):
            if self._writable():
                conn = sqlite3.connect(
                    f"{uri}?mode=rw", uri=True, timeout=60.0, isolation_level=None
                )
                conn.execute("PRAGMA query_only=ON")
            else:
                immutable = "" if os.access(self.path.parent, os.W_OK) else "&immutable=1"
                conn = sqlite3.connect(
                    f"{uri}?mode=ro{immutable}", uri=True, timeout=60.0, isolation_level=None
                )
            conn.text_factory = _text
            try:
                yield conn
            finally:
                conn.close()

    @contextmanager
    def _writer(self) -> Iterator[sqlite3.Connection]:
        if not self._writable():
            raise self._read_only()
        if not self.path.exists():
            self._create()
        with self._sqlite_errors("written"):
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            conn.text_factory = _text
            try:
                conn.execute("PRAGMA synchronous=FULL")
                # Restores append-only triggers someone dropped (the chain shows any edit).
                conn.executescript(_SCHEMA)
                yield conn
            finally:
                conn.close()

    def _create(self) -> None:
        """Build an empty ledger beside `path` and link it into place in one step, so no
        reader ever meets a half-made (zero-byte) file and two first writers share one."""
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._os_error("created", exc) from None
        fresh = folder / f".{self.path.name}.{uuid.uuid4().hex}.new"
        try:
            with self._sqlite_errors("created"):
                conn = sqlite3.connect(fresh, isolation_level=None)
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.executescript(_SCHEMA)
                finally:
                    conn.close()  # the last connection folds the WAL into the file
            try:
                os.link(fresh, self.path)
            except FileExistsError:
                pass  # another writer created it first: theirs is the ledger
            except OSError:  # a file system without hard links
                if not self.path.exists():
                    os.replace(fresh, self.path)
        except OSError as exc:
            raise self._os_error("created", exc) from None
        finally:
            fresh.unlink(missing_ok=True)

    def _read(self, conn: sqlite3.Connection) -> tuple[VerifyReport, list[Event]]:
        """Rows and chain head in one read transaction (a snapshot: a writer committing
        between the two reads would otherwise look like a truncated tail), walked."""
        conn.execute("BEGIN")
        try:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM events ORDER BY seq").fetchall()
            head = conn.execute("SELECT count, hash FROM chain_head WHERE id = 1").fetchone()
        finally:
            conn.execute("COMMIT")
        return _walk(rows, head)

    # --- the API -----------------------------------------------------------------------

    def check_writable(self) -> None:
        """Raise the read-only `LedgerError` now, before work whose result could not be
        recorded (a scan, a gate decision, a patch)."""
        if not self._writable():
            raise self._read_only()

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
        concurrent scans would both open the same finding. A broken chain is never
        extended: `LedgerTamperedError`, and nothing is written.
        """
        written: list[Event] = []
        with self._writer() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute(f"SELECT {_COLUMNS} FROM events ORDER BY seq").fetchall()
                head = conn.execute("SELECT count, hash FROM chain_head WHERE id = 1").fetchone()
                report, current = _walk(rows, head)
                if not report.ok:
                    raise LedgerTamperedError(self.path, report)
                bodies = [
                    (kind, json.loads(canonical_json(payload))) for kind, payload in build(current)
                ]
                count, prev = report.events, report.head_hash
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

    def verified(self) -> tuple[list[Event], ChainHead]:
        """Every event, after the chain was walked and found intact, and the head that walk
        ended on. Raises `LedgerTamperedError` when it is broken."""
        if not self.path.exists():
            return [], ChainHead(0, GENESIS)
        with self._reader() as conn:
            report, events = self._read(conn)
        if not report.ok:
            raise LedgerTamperedError(self.path, report)
        return events, report.head

    def events(self, kinds: Iterable[str] | None = None) -> list[Event]:
        """The verified events (see `verified`), only those of `kinds` if given."""
        wanted = set(kinds) if kinds is not None else None
        events, _ = self.verified()
        return [e for e in events if wanted is None or e.kind in wanted]

    def verify(self) -> VerifyReport:
        """Walk the chain; name every event that was edited, deleted around, or moved."""
        if not self.path.exists():
            return VerifyReport(0, GENESIS, [])
        with self._reader() as conn:
            report, _ = self._read(conn)
        return report


def _text(raw: bytes) -> str:
    """A text column as read. Bytes flipped in the file can make it invalid UTF-8; read
    with replacement characters, it no longer matches its hash, so the walk names the
    edited event instead of the read failing."""
    return raw.decode("utf-8", errors="replace")


def _walk(
    rows: Sequence[Sequence[Any]], head: Sequence[Any] | None
) -> tuple[VerifyReport, list[Event]]:
    """Check every row against its hash and its predecessor, and the table against the
    chain head; the report, and the rows as events (those that still parse)."""
    problems: list[ChainProblem] = []
    events: list[Event] = []
    by_hash = {row[7]: row for row in rows}
    prev_hash, prev_seq = GENESIS, 0
    for seq, event_id, ts, kind, actor, payload_text, stored_prev, stored_hash in rows:
        texts = (event_id, ts, kind, actor, payload_text, stored_prev, stored_hash)
        if not (isinstance(seq, int) and all(isinstance(v, str) for v in texts)):
            # Bytes flipped inside the file can change a column's type; never compare those.
            problems.append(
                ChainProblem(prev_seq + 1, str(event_id), "edited: its columns no longer hold text")
            )
            prev_hash, prev_seq = str(stored_hash), prev_seq + 1
            continue
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
        else:
            events.append(Event(seq, event_id, ts, kind, actor, payload, stored_prev, stored_hash))
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
                f"{str(head[1])[:12]}, but the table ends at #{prev_seq}",
            )
        )
    return VerifyReport(len(rows), prev_hash, problems), events
