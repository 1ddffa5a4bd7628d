"""The telemetry spill file: where records go when the writer's in-memory queue is full.

A burst larger than `monitor.telemetry.max_queued_records` must neither block requests nor
grow memory without bound nor lose a record, so past the bound the request path appends
its records to this append-only file (one JSON line per record: the record and its input
row, which the detectors' window needs) and the writer drains it after the queue. The byte
offset up to which the file is committed to the database is written in the same
transaction as each batch drained from it (`TelemetryStore.append_batch(spill_offset=)`),
so after a crash or a restart exactly the uncommitted lines are read again, before the
service serves. Once drained to its end the file is emptied and the offset reset.
"""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path

import numpy as np
import orjson

from hardenml.monitor.telemetry import Observation, TelemetryRecord

log = logging.getLogger("hardenml.monitor")


def _line(observation: Observation) -> bytes:
    row = np.ascontiguousarray(observation.row, dtype=np.float32)
    return orjson.dumps(
        {"record": observation.record.as_dict(), "row": base64.b64encode(row.tobytes()).decode()}
    )


def _observation(line: bytes) -> Observation:
    value = orjson.loads(line)
    row = np.frombuffer(base64.b64decode(value["row"]), dtype=np.float32).copy()
    return Observation(TelemetryRecord(**value["record"]), row)


class SpillFile:
    """An append-only file of telemetry records at `path`: `append` from the request
    path, `read` from the writer, `clear` once everything in it is committed."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def append(self, observations: list[Observation]) -> None:
        """Append the records, one line each (flushed to the OS, which keeps them across
        the process's end; no fsync: the in-memory queue does not survive a power cut
        either)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = b"".join(_line(o) + b"\n" for o in observations)
        with self.path.open("ab") as out:
            out.write(data)

    def read(self, offset: int, limit: int) -> tuple[list[Observation], int]:
        """Up to `limit` complete records from byte `offset`, and the offset after them.
        A torn last line (the process died while writing it) is not read."""
        if limit <= 0:
            return [], offset
        out: list[Observation] = []
        with self.path.open("rb") as source:
            source.seek(offset)
            while len(out) < limit:
                line = source.readline()
                if not line.endswith(b"\n"):
                    break
                out.append(_observation(line[:-1]))
                offset += len(line)
        return out, offset

    def count_from(self, offset: int) -> int:
        """Complete records after byte `offset`."""
        if self.size() <= offset:
            return 0
        with self.path.open("rb") as source:
            source.seek(offset)
            return source.read().count(b"\n")

    def clear(self) -> None:
        """Empty the file (everything in it is committed)."""
        if self.path.exists():
            with self.path.open("r+b") as out:
                out.truncate(0)
                os.fsync(out.fileno())
