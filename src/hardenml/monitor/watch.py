"""The watch: sliding windows of the telemetry stream, the detectors, the alert rules.

The telemetry writer hands each committed batch to `Watch.observe` in its own thread, so
no detector runs on the request path. The window holds the latest `monitor.window`
records; every `monitor.evaluate_every_s` seconds (once `min_window` records arrived) each
detector judges it against the reference data, the alert manager turns the readings into
raise/clear events (threshold, hysteresis, cooldown: a lasting condition raises one
alert), and each event is written to the ledger, sent to the sinks and exported as
metrics.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hardenml.config import HardenConfig
from hardenml.ledger import Ledger
from hardenml.monitor.metrics import MAX_FEATURE_SERIES, MonitorMetrics
from hardenml.monitor.telemetry import Observation
from hardenml.targets import Target

log = logging.getLogger("hardenml.monitor")

MONITOR_ALERT = "monitor.alert"
RECENT_ALERT_EVENTS = 100


class Watch:
    """Windows of the stream, judged by `detectors`, turned into alerts by `alerts`."""

    def __init__(
        self,
        *,
        model_name: str,
        detectors: Sequence[Any],
        alerts: Any,
        sinks: Sequence[Any],
        window: int,
        min_window: int,
        evaluate_every_s: float,
        ledger: Ledger,
        metrics: MonitorMetrics,
        window_type: Callable[..., Any],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.model_name = model_name
        self.detectors = list(detectors)
        self.alerts = alerts
        self.sinks = list(sinks)
        self.window = window
        self.min_window = min_window
        self.evaluate_every_s = evaluate_every_s
        self.ledger = ledger
        self.metrics = metrics
        self.window_type = window_type
        self.clock = clock
        self._rows: deque[np.ndarray] = deque(maxlen=window)
        self._probabilities: deque[list[float]] = deque(maxlen=window)
        self._clients: deque[str] = deque(maxlen=window)
        self._lock = threading.Lock()
        self.readings_: list[Any] = []
        self.events_: deque[dict[str, Any]] = deque(maxlen=RECENT_ALERT_EVENTS)
        self.evaluations_ = 0
        self.last_evaluated_ = 0.0
        self.seen_ = 0

    def observe(self, batch: Sequence[Observation]) -> None:
        """Add a written batch to the window; evaluate when it is due."""
        with self._lock:
            for observation in batch:
                self._rows.append(observation.row)
                self._probabilities.append(observation.record.scores)
                self._clients.append(observation.record.client_id)
            self.seen_ += len(batch)
        now = self.clock()
        if (
            len(self._rows) >= self.min_window
            and now - self.last_evaluated_ >= self.evaluate_every_s
        ):
            self.evaluate(now)

    def evaluate(self, now: float | None = None) -> list[Any]:
        """Run every detector on the current window; returns the alert events."""
        now = self.clock() if now is None else now
        with self._lock:
            if not self._rows:
                return []
            window = self.window_type(
                inputs=np.stack(self._rows),
                probabilities=np.asarray(self._probabilities, dtype=np.float64),
                clients=list(self._clients),
            )
        readings: list[Any] = []
        for detector in self.detectors:
            try:
                readings.extend(detector.evaluate(window))
            except Exception as exc:  # one detector's failure must not silence the others
                log.error("detector %s failed on a window: %s", detector.name, exc)
        self.readings_ = readings
        self.evaluations_ += 1
        self.last_evaluated_ = now
        self._export(readings)
        events = list(self.alerts.update(readings, now)) if self.alerts is not None else []
        for event in events:
            self._publish(event)
        return events

    def _export(self, readings: Sequence[Any]) -> None:
        per_feature = [r for r in readings if r.feature is not None]
        per_feature.sort(key=lambda r: 1.0 if r.p_value is None else r.p_value)
        shown = [r for r in readings if r.feature is None] + per_feature[:MAX_FEATURE_SERIES]
        for reading in shown:
            labels = {"detector": reading.detector, "feature": reading.feature or ""}
            if reading.p_value is not None:
                self.metrics.drift_p_value.labels(**labels).set(reading.p_value)
            self.metrics.detector_statistic.labels(**labels).set(reading.statistic)
            self.metrics.detector_flagged.labels(**labels).set(1.0 if reading.flagged else 0.0)

    def _publish(self, event: Any) -> None:
        payload = {"model": self.model_name, **event.as_dict()}
        try:
            self.ledger.append(MONITOR_ALERT, payload)
        except Exception as exc:  # the alert still goes to the sinks and the page
            log.error("alert %s not written to the ledger: %s", payload.get("rule"), exc)
        self.events_.append(payload)
        for sink in self.sinks:
            # A webhook that retries must not hold up the telemetry thread.
            threading.Thread(target=_send, args=(sink, payload), daemon=True).start()
        rule = str(payload.get("rule", ""))
        active = bool(payload.get("active", payload.get("state") == "raised"))
        self.metrics.alert_active.labels(rule=rule).set(1.0 if active else 0.0)
        if active:
            self.metrics.alerts_raised.labels(rule=rule).inc()

    def alerts_status(self) -> list[dict[str, Any]]:
        """Every rule with its current state, then the recent events."""
        return list(self.events_)

    def status(self) -> dict[str, Any]:
        return {
            "window": len(self._rows),
            "seen": self.seen_,
            "evaluations": self.evaluations_,
            "readings": [r.as_dict() for r in self.readings_],
            "alerts": self.alerts_status(),
        }

    def close(self) -> None:
        """Nothing is left to flush: alert events are written as they happen."""


def _send(sink: Any, payload: dict[str, Any]) -> None:
    try:
        sink.send(payload)
    except Exception as exc:
        log.error("alert sink %s failed: %s", type(sink).__name__, exc)


def build_watch(
    config: HardenConfig,
    *,
    reference_rows: np.ndarray,
    reference_labels: np.ndarray,
    model: Target | None,
    ledger: Ledger,
    metrics: MonitorMetrics,
) -> Watch | None:
    """The watch `[monitor]` configures, or None when it names no detector."""
    monitor = config.monitor
    if not monitor.detectors:
        return None
    raise NotImplementedError("detectors arrive from the monitor-detectors branch")
