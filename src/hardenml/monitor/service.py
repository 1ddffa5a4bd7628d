"""The live service's behaviour, apart from HTTP: predict, ingest, switch, report state.

`MonitorService` holds the traffic router (blue/green), the telemetry writer, the watch
(detectors and alerts) and the metrics. The web app (`hardenml.monitor.app`) only parses
requests and calls these; `hardenml.monitor.build` assembles a service from a workspace.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from hardenml.ledger import Ledger
from hardenml.monitor.foreground import Foreground
from hardenml.monitor.inputs import IngestedRecord
from hardenml.monitor.metrics import MonitorMetrics
from hardenml.monitor.models import ServedModel
from hardenml.monitor.readings import MonitorError
from hardenml.monitor.telemetry import PendingRecords, TelemetryStore, fingerprint_arrays
from hardenml.monitor.traffic import TrafficRouter
from hardenml.monitor.watch import Watch
from hardenml.monitor.writer import TelemetryWriter
from hardenml.records import TRAFFIC_SWITCHED, TrafficSwitched
from hardenml.targets import InputSpec

log = logging.getLogger("hardenml.monitor")

MONITOR_STARTED = "monitor.started"
MONITOR_STOPPED = "monitor.stopped"
# The status page's traffic plot: requests per second over the last ten minutes.
TRAFFIC_SECONDS = 600
RECENT_CONFIDENCES = 2000


@dataclass(frozen=True)
class Prediction:
    """The answer to one predict request: per row the class index, top probability and
    all per-class probabilities, and the version that answered."""

    request_id: str
    model_version: str
    class_indices: list[int]
    confidences: list[float]
    scores: list[list[float]]
    model_seconds: float


@dataclass
class TrafficCounts:
    """Predictions per second (a ring of `TRAFFIC_SECONDS` buckets) and per version."""

    per_second: deque[tuple[int, int]] = field(
        default_factory=lambda: deque(maxlen=TRAFFIC_SECONDS)
    )
    per_version: dict[str, int] = field(default_factory=dict)
    confidences: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_CONFIDENCES))

    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, version: str, confidences: Sequence[float], now: float) -> None:
        """Count predictions (from any request thread)."""
        second = int(now)
        with self.lock:
            if self.per_second and self.per_second[-1][0] == second:
                self.per_second[-1] = (second, self.per_second[-1][1] + len(confidences))
            else:
                self.per_second.append((second, len(confidences)))
            self.per_version[version] = self.per_version.get(version, 0) + len(confidences)
            self.confidences.extend(confidences)

    def snapshot(self) -> tuple[list[tuple[int, int]], dict[str, int], list[float]]:
        """(per second, per version, recent confidences), copied under the lock."""
        with self.lock:
            return list(self.per_second), dict(self.per_version), list(self.confidences)


class MonitorService:
    """Serves `router`'s models (None: ingest only), records telemetry through `writer`,
    feeds `watch`, and records switches in `ledger`."""

    def __init__(
        self,
        *,
        model_name: str,
        classes: Sequence[str],
        input_spec: InputSpec,
        router: TrafficRouter | None,
        store: TelemetryStore,
        writer: TelemetryWriter,
        ledger: Ledger,
        watch: Watch | None,
        metrics: MonitorMetrics,
        keep_raw_inputs: bool,
        max_rows: int,
        max_body_bytes: int,
        foreground: Foreground | None = None,
    ) -> None:
        self.model_name = model_name
        self.classes = tuple(classes)
        self.input_spec = input_spec
        self.router = router
        self.store = store
        self.writer = writer
        self.ledger = ledger
        self.watch = watch
        self.metrics = metrics
        self.keep_raw_inputs = keep_raw_inputs
        self.max_rows = max_rows
        self.max_body_bytes = max_body_bytes
        # The predict requests in flight (`hardenml.monitor.foreground`).
        self.foreground = Foreground() if foreground is None else foreground
        self.traffic = TrafficCounts()
        self.started_at = time.time()
        self._switch_lock = threading.Lock()
        self._started = False
        metrics.watch_writer(lambda: writer.backlog, lambda: writer.written_, lambda: writer.held)
        self._export_shares()

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Record the start in the ledger (which also creates the database the telemetry
        tables live in) and start the writer and the watch."""
        if self._started:
            return
        self.ledger.append(MONITOR_STARTED, {"model": self.model_name, "shares": self.shares()})
        # The writer first: its process is forked while no other thread runs (a lock a
        # thread held at the fork would stay held in the child).
        self.writer.start()
        if self.watch is not None:
            self.watch.start()
        self._started = True

    def close(self) -> None:
        """Flush every queued telemetry record, then record the stop."""
        if not self._started:
            return
        self._started = False
        self.writer.close()
        if self.watch is not None:
            self.watch.close()
        self.ledger.append(
            MONITOR_STOPPED,
            {"model": self.model_name, "telemetry_records": self.writer.written_},
        )

    # --- requests ----------------------------------------------------------------------

    @property
    def serving(self) -> bool:
        return self.router is not None

    def predict(self, rows: np.ndarray, *, request_id: str, client_id: str) -> Prediction:
        """Answer `rows` (n, *input_spec.shape) with the version the split picks, and
        record them."""
        prediction, pending = self.infer(rows, request_id=request_id, client_id=client_id)
        self.record(pending)
        return prediction

    def infer(
        self, rows: np.ndarray, *, request_id: str, client_id: str
    ) -> tuple[Prediction, PendingRecords]:
        """The answer to `rows` and its telemetry, not yet recorded: `POST /v1/predict`
        sends the answer first and records right after, before the request counts as done.
        Refuses (`TelemetryFull`) when the telemetry could not be recorded."""
        if self.router is None:
            raise MonitorError("this service only ingests records (`hardenml monitor ingest`)")
        self.writer.check_accepting()
        model = self.router.plan.pick(request_id)
        n = len(rows)
        # The inputs' fingerprints (a sha256 and four statistics per row) before the
        # forward pass, while the rows just parsed are in the core's cache. After it (when
        # the telemetry is recorded, after the answer) the rows had left the cache: py-spy
        # on `bench/monitor.py` put them at about 0.45 ms per 32-row request there against
        # 0.25 ms in isolation, and a client's next request waited for them. Computed in a
        # thread beside the forward pass instead, they slowed it (the interpreter lock
        # changed hands at each of the thread's hashes): 0.4 ms more at the model's median.
        fingerprints = fingerprint_arrays(rows.reshape(n, -1))
        began = time.perf_counter()
        inputs = torch.from_numpy(rows).to(dtype=self.input_spec.dtype, device=model.target.device)
        with torch.no_grad():
            probabilities = torch.softmax(model.target.logits(inputs).double(), dim=1).cpu().numpy()
        model_seconds = time.perf_counter() - began
        indices = probabilities.argmax(axis=1)
        confidences = probabilities[np.arange(len(indices)), indices]
        pending = self._pending(
            rows,
            probabilities,
            version=model.version,
            source="predict",
            request_ids=[request_id] if n == 1 else [f"{request_id}#{i}" for i in range(n)],
            client_ids=[client_id] * n,
            latencies=[model_seconds * 1000.0] * n,
            fingerprints=fingerprints,
        )
        self.metrics.model_seconds.labels(model_version=model.version).observe(model_seconds)
        prediction = Prediction(
            request_id,
            model.version,
            indices.tolist(),
            confidences.tolist(),
            probabilities.tolist(),
            model_seconds,
        )
        return prediction, pending

    def ingest(self, records: Sequence[IngestedRecord], *, request_id: str) -> int:
        """Record what another service predicted; returns how many records were taken."""
        rows = np.stack([r.row for r in records])
        scores = np.stack([r.scores for r in records])
        by_version: dict[str, list[int]] = {}
        for i, record in enumerate(records):
            by_version.setdefault(record.model_version, []).append(i)
        self.writer.check_accepting()
        for version, picked in by_version.items():
            pending = self._pending(
                rows[np.asarray(picked)],
                scores[np.asarray(picked)],
                version=version,
                source="ingest",
                request_ids=[records[i].request_id or f"{request_id}#{i}" for i in picked],
                client_ids=[records[i].client_id for i in picked],
                latencies=[records[i].latency_ms for i in picked],
            )
            self.record(pending)
        return len(records)

    def _pending(
        self,
        rows: np.ndarray,
        scores: np.ndarray,
        *,
        version: str,
        source: Literal["predict", "ingest"],
        request_ids: Sequence[str],
        client_ids: Sequence[str],
        latencies: Sequence[float | None],
        fingerprints: tuple[list[str], np.ndarray] | None = None,
    ) -> PendingRecords:
        return PendingRecords(
            rows=rows.reshape(rows.shape[0], -1),
            scores=scores,
            at=time.time(),
            model_version=version,
            source=source,
            request_ids=request_ids,
            client_ids=client_ids,
            latencies=latencies,
            keep_raw_inputs=self.keep_raw_inputs,
            fingerprints=fingerprints,
        )

    def record(self, pending: PendingRecords) -> None:
        """The rows' telemetry to the writer (one frame to its log: the records are built
        in its process) and to the watch's window, and the counters and the page's. Never
        refuses: `infer` checked that the writer takes records."""
        self.writer.submit(pending, refuse_when_full=False)
        if self.watch is not None:
            self.watch.observe(pending)
        confidences = np.asarray(pending.scores).max(axis=1)
        self.metrics.predictions.labels(
            model_version=pending.model_version, source=pending.source
        ).inc(len(confidences))
        self.metrics.confidence.observe_many(confidences)
        self.traffic.add(pending.model_version, confidences.tolist(), pending.at)

    # --- blue/green --------------------------------------------------------------------

    def shares(self) -> dict[str, float]:
        return {} if self.router is None else self.router.plan.shares()

    def versions(self) -> list[ServedModel]:
        if self.router is None:
            return []
        plan = self.router.plan
        return [plan.released] + ([plan.candidate] if plan.candidate is not None else [])

    def _export_shares(self) -> None:
        self.metrics.set_shares(self.shares(), [m.version for m in self.versions()])

    def switch(self, candidate_share: float, *, reason: str, rollback: bool) -> TrafficSwitched:
        """Move traffic to `candidate_share` on the candidate, atomically, and record it.
        The ledger event is written first: a switch the ledger did not take never happens."""
        if self.router is None:
            raise MonitorError("this service serves no model (ingest only): nothing to switch")
        with self._switch_lock:
            plan = self.router.plan
            after = self.router.planned(candidate_share)
            event = TrafficSwitched(
                model=self.model_name,
                before=plan.shares(),
                after=after.shares(),
                reason=reason,
                rollback=rollback,
            )
            self.ledger.append(TRAFFIC_SWITCHED, event.to_payload())
            self.router.install(after)
        self.metrics.traffic_switches.inc()
        self._export_shares()
        log.warning("traffic switched: %s -> %s (%s)", event.before, event.after, reason)
        return event

    def rollback(self, *, reason: str) -> TrafficSwitched:
        """Send every request to the released model."""
        return self.switch(0.0, reason=reason or "rollback", rollback=True)

    # --- state -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What the status page and `GET /v1/status` show."""
        return {
            "model": self.model_name,
            "serving": self.serving,
            "versions": [
                {"version": m.version, "role": m.role, "sha256": m.sha256} for m in self.versions()
            ],
            "shares": self.shares(),
            "predictions_by_version": self.traffic.snapshot()[1],
            "telemetry": {
                "submitted": self.writer.submitted_,
                "written": self.writer.written_,
                "backlog": self.writer.backlog,
                "held_in_memory": self.writer.held,
                "writer": "process" if self.writer.in_process else "thread",
                "writer_priority": self.writer.priority,
            },
            "uptime_s": round(time.time() - self.started_at, 3),
            "watch": None if self.watch is None else self.watch.status(),
        }
