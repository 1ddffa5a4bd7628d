"""The replay buffer: a bounded, seeded sample of the inputs that broke the model.

Rows come from two places: the adversarial examples the scan kept as findings' evidence
(`hardenml.report.evidence.load_evidence`), and inputs the live monitor flagged
(`rows_from_flagged`, which takes arrays and a source tag and imports nothing of the
monitor). `hardenml retrain` trains on the buffer beside clean data so the next model does
not forget what broke the last one.

The capacity is fixed; which rows stay is decided by weighted reservoir sampling, A-Res:
Efraimidis & Spirakis 2006, "Weighted random sampling with a reservoir",
https://doi.org/10.1016/j.ipl.2005.11.003. Each row draws `u ~ U(0, 1)` once, when it
arrives, and the buffer keeps the `capacity` rows with the largest `u ** (1 / w)`. The
weight is the finding's severity (critical 8, high 4, medium 2, low 1) times a recency
term. Recency uses forward decay (Cormode et al. 2009, "Forward Decay: A Practical Time
Decay Model for Streaming Systems", https://doi.org/10.1109/ICDE.2009.5): a row added at
day `t` weighs `s * exp(lambda * t)` with `lambda = ln 2 / half_life_days`, which ranks rows
exactly as decaying every older row would, without touching stored keys. The key is kept
as `log(-log u) - log w` (smaller is kept): `u ** (1 / w)` itself underflows at any real
day count.

Each version is one .npz under the artifacts folder, named by its sha256 and verified on
load, and one `replay.updated` ledger event (`hardenml.records.ReplayUpdated`).

Every row carries the id of the row it came from (`source_id`, `row_ids`: a digest of the
clean input, the evaluation row a finding's example was crafted from, or the flagged input
itself), so that `hardenml validate` can leave out the evaluation rows a retrained model
was trained on (`replayed_source_ids`): measured on them, it would be measured on data it
has seen.
"""

from __future__ import annotations

import hashlib
import io
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from hardenml.config import HardenConfig
from hardenml.data import DataError, read_npz
from hardenml.ledger import Event, Ledger, findings_state
from hardenml.records import REPLAY_UPDATED, SEVERITIES, ReplayUpdated, Severity
from hardenml.report.evidence import Evidence, EvidenceProblem, load_evidence
from hardenml.stats import derive_seed

REPLAY_DIR = "replay"
SEVERITY_WEIGHT: dict[str, float] = {"critical": 8.0, "high": 4.0, "medium": 2.0, "low": 1.0}
ROW_ARRAYS = ("x", "y", "severity", "source", "origin", "added_day", "key", "source_id")
# A row id is this many hex digits of the sha256 of the row (as float32): 64 bits, so
# two different rows of a dataset share one with a chance of about n^2 / 2^65.
ROW_ID_HEX = 16
FINDINGS_SOURCE = "scan"


class ReplayError(Exception):
    """The replay buffer cannot be read or updated as asked; the message says why."""


def today() -> float:
    """Now, in days since the UNIX epoch: the clock of a row's recency."""
    return time.time() / 86400.0


@dataclass(frozen=True)
class ReplayRows:
    """Rows of the buffer, or offered to it: inputs `x` (n, *input_shape) float32, labels
    `y` (n,) int64 and, per row, its severity, source tag (`scan`, or the monitor's tag),
    origin (the finding id, or the flagged batch's tag), the day it was added, its A-Res
    key (NaN until the buffer draws one) and the id of the clean row it came from
    (`row_ids`; empty in buffers written before rows carried one)."""

    x: np.ndarray
    y: np.ndarray
    severity: np.ndarray
    source: np.ndarray
    origin: np.ndarray
    added_day: np.ndarray
    key: np.ndarray
    source_id: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    @classmethod
    def empty(cls, shape: tuple[int, ...]) -> ReplayRows:
        no_text = np.zeros(0, dtype="<U1")
        return cls(
            np.zeros((0, *shape), dtype=np.float32),
            np.zeros(0, dtype=np.int64),
            no_text,
            no_text,
            no_text,
            np.zeros(0),
            np.zeros(0),
            no_text,
        )

    @classmethod
    def tagged(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        *,
        severity: Severity | str,
        source: str,
        origin: str,
        day: float,
        source_id: np.ndarray | None = None,
    ) -> ReplayRows:
        """Rows of one severity, source and origin; `source_id` defaults to the ids of
        `x` itself (flagged inputs are their own source)."""
        n = len(y)
        if len(x) != n:
            raise ReplayError(f"{len(x)} inputs but {n} labels")
        if severity not in SEVERITY_WEIGHT:
            raise ReplayError(f"severity must be one of {list(SEVERITIES)}, got {severity!r}")
        return cls(
            np.asarray(x, dtype=np.float32),
            np.asarray(y, dtype=np.int64),
            np.full(n, severity),
            np.full(n, source),
            np.full(n, origin),
            np.full(n, float(day)),
            np.full(n, np.nan),
            row_ids(x) if source_id is None else np.asarray(source_id, dtype=str),
        )

    def concat(self, other: ReplayRows) -> ReplayRows:
        if len(self) and len(other) and self.x.shape[1:] != other.x.shape[1:]:
            raise ReplayError(
                f"inputs of shape {other.x.shape[1:]} cannot join a buffer of "
                f"{self.x.shape[1:]} inputs"
            )
        if not len(self):
            return other
        if not len(other):
            return self
        return ReplayRows(
            *(np.concatenate([getattr(self, k), getattr(other, k)]) for k in ROW_ARRAYS)
        )

    def take(self, index: np.ndarray) -> ReplayRows:
        return ReplayRows(*(getattr(self, k)[index] for k in ROW_ARRAYS))

    def counts(self) -> dict[str, int]:
        tags, n = np.unique(self.source, return_counts=True)
        return {str(t): int(c) for t, c in zip(tags, n, strict=True)}


def row_ids(x: np.ndarray) -> np.ndarray:
    """The id of each row of `x` (n, ...): its first `ROW_ID_HEX` hex digits of sha256,
    over the row as contiguous float32, so the same input has the same id wherever it is."""
    rows = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(len(x), -1))
    ids = [hashlib.sha256(row.tobytes()).hexdigest()[:ROW_ID_HEX] for row in rows]
    return np.array(ids, dtype=f"<U{ROW_ID_HEX}")


def weights(rows: ReplayRows, half_life_days: float) -> np.ndarray:
    """log of each row's A-Res weight: log severity weight + lambda * day (forward decay)."""
    severity = np.array([math.log(SEVERITY_WEIGHT[str(s)]) for s in rows.severity])
    return severity + math.log(2.0) / half_life_days * rows.added_day


def reservoir(
    held: ReplayRows, offered: ReplayRows, *, capacity: int, half_life_days: float, seed: int
) -> tuple[ReplayRows, int]:
    """A-Res over the rows held and those offered: each offered row draws its key, then the
    `capacity` rows with the smallest `log(-log u) - log w` stay, in arrival order. The
    draws depend on `seed` and on what was offered, so the same updates give the same
    buffer. Returns the rows kept and how many of them were offered now."""
    if len(offered):
        digest = hashlib.sha256(np.ascontiguousarray(offered.x).tobytes())
        digest.update(offered.y.tobytes())
        rng = np.random.default_rng(derive_seed(seed, "replay", digest.hexdigest()))
        # U(0, 1) open at both ends: log(-log u) is finite.
        u = np.clip(rng.random(len(offered)), np.finfo(float).tiny, 1.0 - 1e-16)
        offered = replace(offered, key=np.log(-np.log(u)) - weights(offered, half_life_days))
    rows = held.concat(offered)
    if len(rows) <= capacity:
        return rows, len(offered)
    kept = np.sort(np.argsort(rows.key, kind="stable")[:capacity])
    return rows.take(kept), int((kept >= len(held)).sum())


def rows_from_flagged(
    x: np.ndarray,
    y: np.ndarray,
    *,
    source: str,
    severity: Severity | str = "high",
    day: float | None = None,
) -> ReplayRows:
    """Inputs the monitor flagged (adversarial-input alarms, reviewed mistakes), with their
    labels, as rows for `update_replay`. `source` tags them (e.g. `monitor:prod-eu`)."""
    if not source:
        raise ReplayError("flagged inputs need a source tag")
    return ReplayRows.tagged(
        x, y, severity=severity, source=source, origin=source, day=today() if day is None else day
    )


@dataclass(frozen=True)
class FindingRows:
    rows: ReplayRows
    ingested: list[str]
    problems: list[EvidenceProblem]


def rows_from_findings(
    config: HardenConfig, events: list[Event], *, skip: set[str], day: float | None = None
) -> FindingRows:
    """The adversarial examples of every finding's evidence not yet taken in (`skip`: the
    sha256 of evidence files already ingested): the successful ones (`pred != y`), with
    their true labels and the finding's severity."""
    day = today() if day is None else day
    shape = tuple(config.model.input.shape)
    rows = ReplayRows.empty(shape)
    ingested: list[str] = []
    problems: list[EvidenceProblem] = []
    for finding in findings_state(events).values():
        fresh = [
            e
            for e in finding.evidence
            if e.get("kind") == "adversarial_examples" and e.get("sha256") not in skip
        ]
        if not fresh:
            continue
        sha_of = {str(e["path"]): str(e.get("sha256", "")) for e in fresh}
        for item in load_evidence(config, finding):
            if item.path not in sha_of:
                continue
            if isinstance(item, EvidenceProblem):
                problems.append(item)
                continue
            rows = rows.concat(_evidence_rows(item, finding.severity, day))
            ingested.append(sha_of[item.path])
    return FindingRows(rows, ingested, problems)


def _evidence_rows(item: Evidence, severity: Severity, day: float) -> ReplayRows:
    flipped = item.pred != item.y
    return ReplayRows.tagged(
        item.x_adv[flipped],
        item.y[flipped],
        severity=severity,
        source=FINDINGS_SOURCE,
        origin=item.finding_id,
        day=day,
        source_id=row_ids(item.x[flipped]),
    )


@dataclass(frozen=True)
class ReplayVersion:
    """One version of the buffer as the ledger records it, with its rows."""

    record: ReplayUpdated
    rows: ReplayRows
    seq: int


def latest_replay(config: HardenConfig, events: list[Event]) -> ReplayVersion | None:
    """The buffer's latest version (its file checked against the recorded sha256)."""
    last = next((e for e in reversed(events) if e.kind == REPLAY_UPDATED), None)
    if last is None:
        return None
    record = ReplayUpdated.from_payload(last.payload)
    path = config.resolve(Path(record.path))
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ReplayError(
            f"replay buffer version {record.version} ({record.path}) cannot be read: {exc.strerror}"
        ) from None
    actual = hashlib.sha256(blob).hexdigest()
    if actual != record.sha256:
        raise ReplayError(
            f"replay buffer {record.path} changed since ledger event #{last.seq} recorded it "
            f"(sha256 {actual[:12]}, recorded {record.sha256[:12]}); restore it or add rows "
            "to a fresh buffer"
        )
    return ReplayVersion(record, _rows(blob, record.path), last.seq)


def _rows(blob: bytes, shown: str) -> ReplayRows:
    try:
        stored = read_npz(blob, f"replay buffer {shown}")
    except DataError as exc:
        raise ReplayError(str(exc)) from None
    arrays = {k: stored[k] for k in ROW_ARRAYS if k in stored}
    # Buffers written before rows carried their source's id: unknown ("").
    arrays.setdefault("source_id", np.full(len(arrays.get("y", ())), "", dtype="<U1"))
    missing = [k for k in ROW_ARRAYS if k not in arrays]
    if missing:
        raise ReplayError(f"replay buffer {shown} is not a replay .npz (it lacks {missing})")
    return ReplayRows(*(arrays[k] for k in ROW_ARRAYS))


def replay_version_rows(config: HardenConfig, events: list[Event], sha256: str) -> ReplayRows:
    """The rows of the buffer version whose file has `sha256` (as its event recorded it)."""
    event = next(
        (e for e in events if e.kind == REPLAY_UPDATED and e.payload.get("sha256") == sha256),
        None,
    )
    if event is None:
        raise ReplayError(f"no replay.updated event records a buffer with sha256 {sha256[:12]}")
    record = ReplayUpdated.from_payload(event.payload)
    try:
        blob = config.resolve(Path(record.path)).read_bytes()
    except OSError as exc:
        raise ReplayError(
            f"replay buffer version {record.version} ({record.path}) cannot be read: {exc.strerror}"
        ) from None
    if hashlib.sha256(blob).hexdigest() != sha256:
        raise ReplayError(
            f"replay buffer {record.path} changed since ledger event #{event.seq} recorded it"
        )
    return _rows(blob, record.path)


def _write(folder: Path, rows: ReplayRows, version: int) -> tuple[Path, str]:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: getattr(rows, k) for k in ROW_ARRAYS})
    blob = buffer.getvalue()
    sha = hashlib.sha256(blob).hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"replay-v{version}-{sha[:12]}.npz"
    path.write_bytes(blob)
    return path, sha


def update_replay(
    config: HardenConfig,
    ledger: Ledger,
    offered: ReplayRows,
    *,
    ingested: list[str] | None = None,
) -> tuple[ReplayVersion, Event]:
    """Offer `offered` to the latest buffer, write the new version and record it."""
    ledger.check_writable()
    shape = tuple(config.model.input.shape)
    if len(offered) and offered.x.shape[1:] != shape:
        raise ReplayError(
            f"inputs of shape {offered.x.shape[1:]} do not match model.input.shape {list(shape)}"
        )
    events = ledger.events()
    current = latest_replay(config, events)
    held = ReplayRows.empty(shape) if current is None else current.rows
    settings = config.replay
    rows, kept = reservoir(
        held,
        offered,
        capacity=settings.capacity,
        half_life_days=settings.half_life_days,
        seed=settings.seed,
    )
    version = 1 if current is None else current.record.version + 1
    path, sha = _write(config.artifacts_dir / REPLAY_DIR, rows, version)
    record = ReplayUpdated(
        version=version,
        path=_shown(config, path),
        sha256=sha,
        parent_sha256=None if current is None else current.record.sha256,
        capacity=settings.capacity,
        size=len(rows),
        offered=len(offered),
        kept=kept,
        sources=rows.counts(),
        seed=settings.seed,
        half_life_days=settings.half_life_days,
        ingested=[*([] if current is None else current.record.ingested), *(ingested or [])],
    )
    event = ledger.append(REPLAY_UPDATED, record.to_payload())
    return ReplayVersion(record, rows, event.seq), event


def add_findings(
    config: HardenConfig, ledger: Ledger, *, day: float | None = None
) -> tuple[ReplayVersion, Event, list[EvidenceProblem]] | None:
    """Take every finding's new adversarial examples into the buffer; None when there is
    no evidence file the buffer has not taken in yet (nothing is recorded)."""
    events = ledger.events()
    current = latest_replay(config, events)
    skip = set() if current is None else set(current.record.ingested)
    found = rows_from_findings(config, events, skip=skip, day=day)
    if not found.ingested:
        if found.problems:
            shown = "; ".join(f"{p.finding_id} {p.path}: {p.reason}" for p in found.problems)
            raise ReplayError(f"no finding's evidence could be read: {shown}")
        return None
    version, event = update_replay(config, ledger, found.rows, ingested=found.ingested)
    return version, event, found.problems


def _shown(config: HardenConfig, path: Path) -> str:
    try:
        return path.resolve().relative_to(config.root.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def describe(version: ReplayVersion) -> dict[str, Any]:
    """What `hardenml replay show` prints: the record, and the rows by severity and origin."""
    rows = version.rows
    by = {
        name: {str(t): int(c) for t, c in zip(*np.unique(col, return_counts=True), strict=True)}
        for name, col in (("severity", rows.severity), ("origin", rows.origin))
    }
    return {"ledger_seq": version.seq, **version.record.to_payload(), **by}
