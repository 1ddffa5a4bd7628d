"""The telemetry log: append-only files between the request path and the database.

Each predict or ingest request appends one line, a frame, to the newest segment of the
folder `telemetry-log/` beside the workspace database, in one `write` call. The writer
process (`hardenml.monitor.writer`) reads the frames in order, builds one
`TelemetryRecord` per prediction and commits them in batches. Each batch's transaction
also stores how far the log is committed (`LogPosition`). So:
- a request pays for its fingerprints and one write into the page cache, never for the
  database, and shares no interpreter lock with the writer;
- a burst grows the log on disk, not the service's memory;
- after a crash or a restart, exactly the frames after the stored position are committed,
  and each only once.

A frame holds fingerprints, not inputs: a raw input reaches the disk only when
`monitor.telemetry.keep_raw_inputs` says so. A segment is closed once it passes
`SEGMENT_BYTES` (the appender starts the next one), and it is removed once it is committed
to its end. Each service start opens a new segment, so a line torn by a crash always ends
a closed segment; the reader skips it with a warning. Only the appender's service writes
the newest segment; a reader waits at its end for the rest of a line that is still being
written.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from hardenml.monitor.telemetry import (
    LogPosition,
    PendingRecords,
    StoredLine,
    TelemetryRecord,
    fingerprint_arrays,
    summary_dict,
)

log = logging.getLogger("hardenml.monitor")

# 2: `summary` holds one [mean, std, min, max] per input (1: one dict per input; a log a
# previous version left is still read).
FRAME_VERSION = 2
# A closed segment is removed once committed: small enough to go soon, large enough that
# rotation (an open and a close) is rare. 32 MB is about 90,000 MNIST predictions.
SEGMENT_BYTES = 32 * 1024 * 1024
_SEGMENT = re.compile(r"^(\d{12})\.jsonl$")


class LogUnwritable(OSError):
    """The log could not take a frame (a full disk, a removed folder)."""


def encode_frame(pending: PendingRecords) -> bytes:
    """One request's predictions as one log line: the request's facts, each input's
    fingerprint (sha256 of its float32 bytes, and its mean, std, min and max), the scores,
    and the flattened float32 inputs only when `pending.keep_raw_inputs`."""
    flat = np.ascontiguousarray(pending.rows, dtype=np.float32).reshape(len(pending), -1)
    digests, summaries = (
        fingerprint_arrays(flat) if pending.fingerprints is None else pending.fingerprints
    )
    frame = {
        "v": FRAME_VERSION,
        "at": pending.at,
        "model_version": pending.model_version,
        "source": pending.source,
        "request_ids": list(pending.request_ids),
        "client_ids": list(pending.client_ids),
        "latencies": list(pending.latencies),
        "sha256": digests,
        "summary": summaries,
        "scores": np.asarray(pending.scores, dtype=np.float64),
        "raw": base64.b64encode(flat.tobytes()).decode() if pending.keep_raw_inputs else None,
        "width": int(flat.shape[1]),
    }
    return orjson.dumps(frame, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"


def decode_frame(line: bytes) -> list[TelemetryRecord]:
    """The records of one frame (ValueError, KeyError or TypeError when it is not one)."""
    return [TelemetryRecord(**fields) for fields in _record_fields(line)]


def frame_lines(line: bytes) -> list[StoredLine]:
    """The records of one frame as the store writes them: the same canonical JSON as
    `TelemetryRecord.as_json`, without building the records (this runs per prediction in
    the writer)."""
    out = []
    for fields in _record_fields(line):
        text = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS).decode()
        columns = (fields["at"], fields["request_id"], fields["client_id"], fields["model_version"])
        out.append(StoredLine(*columns, text))
    return out


def frame_size(line: bytes) -> int:
    """How many records a frame holds (0 when it is not one)."""
    try:
        return len(orjson.loads(line)["sha256"])
    except (ValueError, KeyError, TypeError):
        return 0


def _record_fields(line: bytes) -> list[dict[str, Any]]:
    frame = orjson.loads(line)
    version = frame.get("v")
    if version not in (1, FRAME_VERSION):
        raise ValueError(f"frame version {version!r}, expected 1 or {FRAME_VERSION}")
    scores = np.asarray(frame["scores"], dtype=np.float64)
    n = len(frame["sha256"])
    if scores.ndim != 2 or scores.shape[0] != n:
        raise ValueError(f"scores of shape {scores.shape} for {n} inputs")
    for key in ("request_ids", "client_ids", "latencies", "summary"):
        if len(frame[key]) != n:
            raise ValueError(f"{len(frame[key])} {key} for {n} inputs")
    indices = scores.argmax(axis=1)
    confidences = scores[np.arange(n), indices].tolist()
    predicted = indices.tolist()
    raw: list[list[float]] | None = None
    if frame["raw"] is not None:
        flat = np.frombuffer(base64.b64decode(frame["raw"]), dtype=np.float32)
        raw = flat.reshape(n, int(frame["width"])).tolist()
    score_rows = scores.tolist()
    summaries = frame["summary"] if version == 1 else [summary_dict(s) for s in frame["summary"]]
    at, version, source = frame["at"], frame["model_version"], frame["source"]
    return [
        {
            "at": at,
            "client_id": frame["client_ids"][i],
            "confidence": confidences[i],
            "input_sha256": frame["sha256"][i],
            "input_summary": summaries[i],
            "latency_ms": frame["latencies"][i],
            "model_version": version,
            "predicted": predicted[i],
            "raw_input": None if raw is None else raw[i],
            "request_id": frame["request_ids"][i],
            "scores": score_rows[i],
            "source": source,
        }
        for i in range(n)
    ]


class TelemetryLog:
    """The segments in `folder`: `append` (one service, any of its threads) and `read`,
    `remove_committed` (the writer)."""

    def __init__(self, folder: Path, *, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.folder = Path(folder)
        self.segment_bytes = segment_bytes
        self._fd: int | None = None
        self._segment = 0
        self._size = 0
        self._lock = threading.Lock()

    def path(self, segment: int) -> Path:
        return self.folder / f"{segment:012d}.jsonl"

    def segments(self) -> list[int]:
        """The segment numbers on disk, oldest first."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for m in map(_SEGMENT.match, names) if m)

    # --- the appender --------------------------------------------------------------------

    def open_for_append(self) -> None:
        """Start a new segment after every one on disk (never append to a segment a
        previous run may have left a torn line in)."""
        with self._lock:
            self._close_fd()
            existing = self.segments()
            self._open((existing[-1] if existing else 0) + 1)

    def append(self, frame: bytes) -> None:
        """Write one frame (a line ending in a newline) in one call. On failure the
        segment is closed (any part of the frame that reached it is a torn line the reader
        skips) and `LogUnwritable` raised: the caller keeps the frame and tries again."""
        with self._lock:
            try:
                if self._fd is None:
                    self._open(self._segment + 1)
                assert self._fd is not None
                written = os.write(self._fd, frame)
                if written != len(frame):  # a regular file takes all of it or fails
                    raise OSError(f"wrote {written} of {len(frame)} bytes")
            except OSError as exc:
                self._close_fd()
                raise LogUnwritable(f"telemetry log {self.folder}: {exc}") from exc
            self._size += written
            if self._size >= self.segment_bytes:
                self._close_fd()  # the next append opens the next segment

    def close(self) -> None:
        with self._lock:
            self._close_fd()

    def _open(self, segment: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._segment = segment
        self._fd = os.open(self.path(segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = os.fstat(self._fd).st_size

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    # --- the reader ----------------------------------------------------------------------

    def read(self, position: LogPosition, max_records: int) -> tuple[list[StoredLine], LogPosition]:
        """Whole frames after `position`, at least `max_records` records when that many
        wait (frames are never split), and the position after them. It moves on to the
        next segment at a segment's end only when a newer one exists (the segment is
        closed then, and what follows its last newline is a torn line)."""
        records: list[StoredLine] = []
        for line, after in self._lines(position):
            position = after
            if line is None:
                continue
            try:
                records.extend(frame_lines(line))
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                log.error(
                    "telemetry log %s at byte %d: not a frame (%s); skipped",
                    self.path(after.segment),
                    after.offset - len(line) - 1,
                    exc,
                )
            if len(records) >= max_records:
                break
        return records, position

    def _lines(self, position: LogPosition) -> Iterator[tuple[bytes | None, LogPosition]]:
        """(line without its newline, position after it); (None, start of the next
        segment) where the reader moves on."""
        segments = [s for s in self.segments() if s >= position.segment]
        for k, segment in enumerate(segments):
            offset = position.offset if segment == position.segment else 0
            try:
                source = self.path(segment).open("rb")
            except FileNotFoundError:
                continue
            with source:
                source.seek(offset)
                while True:
                    line = source.readline()
                    if not line.endswith(b"\n"):
                        break
                    offset += len(line)
                    yield line[:-1], LogPosition(segment, offset)
            if k + 1 == len(segments):
                return  # the newest segment: the rest of a line may still be coming
            if line:
                log.warning(
                    "telemetry log %s: %d bytes of a torn last line skipped (a write that "
                    "failed, or a run that stopped while writing)",
                    self.path(segment),
                    len(line),
                )
            yield None, LogPosition(segments[k + 1], 0)

    def records_between(self, start: LogPosition, end: LogPosition) -> int:
        """Records in the complete frames from `start` up to `end`."""
        total = 0
        for line, after in self._lines(start):
            if after > end:
                break
            if line:
                total += frame_size(line)
        return total

    def remove_committed(self, position: LogPosition) -> None:
        """Delete the segments before `position`'s: committed to their end."""
        for segment in self.segments():
            if segment >= position.segment:
                break
            self.path(segment).unlink(missing_ok=True)
