"""The watch: sliding windows of the telemetry stream, the detectors, the alert rules.

The service hands each request's predictions to `Watch.observe` (a few appends to the
window) as it queues their telemetry, and no detector runs on the request path; with
`monitor.detector_process` (the default) the detectors judge the windows in a child
process at a lower CPU priority
(`hardenml.monitor.detector_process`), so they take neither the interpreter lock nor a
core from the requests. The window holds the latest `monitor.window`
records; every `monitor.evaluate_every_s` seconds (once `min_window` records arrived) each
detector judges it against the reference data, the alert manager turns the readings into
raise/clear events (threshold, hysteresis, cooldown: a lasting condition raises one
alert), and each event is written to the ledger, sent to the sinks and exported as
metrics.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hardenml.config import HardenConfig
from hardenml.ledger import Ledger
from hardenml.monitor.alert_records import alert_ledger_events
from hardenml.monitor.alerts import AlertEvent, AlertManager, AlertRule
from hardenml.monitor.detector_process import DetectorProcess, judge
from hardenml.monitor.detectors import (
    AdversarialScore,
    ConfidenceShift,
    Detector,
    DetectorReading,
    FeatureDrift,
    MMDDrift,
    PredictionShift,
    QueryCampaign,
    Window,
    target_predict,
)
from hardenml.monitor.foreground import Foreground
from hardenml.monitor.metrics import MAX_FEATURE_SERIES, MonitorMetrics
from hardenml.monitor.sinks import LogSink, Sink, WebhookSink
from hardenml.monitor.telemetry import PendingRecords
from hardenml.targets import Target

log = logging.getLogger("hardenml.monitor")

RECENT_ALERT_EVENTS = 100
# Detectors that need the served model's outputs on the reference data (or the model).
NEEDS_MODEL = ("prediction_shift", "confidence_shift", "adversarial_score")


class Watch:
    """Windows of the stream, judged by `detectors` in a thread of its own every
    `evaluate_every_s` seconds (in a child process at `detector_niceness` when
    `detector_process`), turned into alert events by `alerts`."""

    def __init__(
        self,
        *,
        config: HardenConfig,
        detectors: Sequence[Detector],
        alerts: AlertManager,
        window: int,
        min_window: int,
        evaluate_every_s: float,
        ledger: Ledger,
        metrics: MonitorMetrics,
        clock: Callable[[], float] = time.time,
        detector_process: bool = False,
        detector_niceness: int = 10,
        detector_idle_priority: bool = True,
        foreground: Foreground | None = None,
    ) -> None:
        self.config = config
        self.model_name = config.model.name
        self.open_finding = {rule.name: rule.open_finding for rule in config.monitor.alerts}
        self.detectors = list(detectors)
        self.alerts = alerts
        self.window = window
        self.min_window = min_window
        self.evaluate_every_s = evaluate_every_s
        self.ledger = ledger
        self.metrics = metrics
        self.clock = clock
        self.detector_process = detector_process
        self.detector_niceness = detector_niceness
        self.detector_idle_priority = detector_idle_priority
        self.foreground = foreground
        self._judge: DetectorProcess | None = None
        # The window as the requests came: (inputs, probabilities, clients) per request, the
        # oldest dropped once the rest hold `window` rows (a request's arrays are kept whole:
        # no per-row work on the request path).
        self._chunks: deque[tuple[np.ndarray, np.ndarray, Sequence[str]]] = deque()
        self._held = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.readings_: list[DetectorReading] = []
        self.events_: deque[dict[str, Any]] = deque(maxlen=RECENT_ALERT_EVENTS)
        self.evaluations_ = 0
        self.seen_ = 0

    def start(self) -> None:
        if self.detector_process and DetectorProcess.available():
            self._judge = DetectorProcess(
                self.detectors,
                niceness=self.detector_niceness,
                idle_priority=self.detector_idle_priority,
                foreground=self.foreground,
                # Between requests only for most of the interval, then beside them.
                max_delay_s=0.8 * self.evaluate_every_s,
            )
            self._judge.start()
        self._thread = threading.Thread(target=self._run, name="monitor-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop evaluating; alert events were written as they happened."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._judge is not None:
            self._judge.close()
            self._judge = None

    def _run(self) -> None:
        while not self._stop.wait(self.evaluate_every_s):
            if self._held >= self.min_window:
                try:
                    self.evaluate()
                except Exception:  # keep watching: the next window may well work
                    log.exception("the watch failed on a window")

    def observe(self, pending: PendingRecords) -> None:
        """Add one request's predictions to the window (called by the service as it hands
        them to the telemetry writer: a few appends, no detector work)."""
        n = len(pending)
        rows = np.ascontiguousarray(pending.rows, dtype=np.float32).reshape(n, -1)
        probabilities = np.asarray(pending.scores, dtype=np.float64)
        with self._lock:
            self._chunks.append((rows, probabilities, pending.client_ids))
            self._held += n
            while self._held - len(self._chunks[0][0]) >= self.window:
                self._held -= len(self._chunks.popleft()[0])
            self.seen_ += n

    def evaluate(self, now: float | None = None) -> list[AlertEvent]:
        """Judge the current window with every detector; returns the alert events."""
        with self._lock:
            if not self._chunks:
                return []
            chunks = list(self._chunks)
        # The latest `window` rows, built outside the lock (requests keep appending).
        window = Window(
            inputs=np.concatenate([c[0] for c in chunks])[-self.window :],
            probabilities=np.concatenate([c[1] for c in chunks])[-self.window :],
            clients=[client for c in chunks for client in c[2]][-self.window :],
        )
        judged = (
            judge(self.detectors, window) if self._judge is None else self._judge.evaluate(window)
        )
        readings: list[DetectorReading] = []
        for name, outcome in judged:
            if isinstance(outcome, str):  # one detector's failure must not silence the others
                log.error("detector %s failed on a window: %s", name, outcome)
            else:
                readings.extend(outcome)
        self.readings_ = readings
        self.evaluations_ += 1
        self._export(readings)
        events = self.alerts.update(readings, self.clock() if now is None else now)
        for event in events:
            self._record(event)
        return events

    def _export(self, readings: Sequence[DetectorReading]) -> None:
        per_feature = sorted(
            (r for r in readings if r.feature is not None),
            key=lambda r: 1.0 if r.p_value is None else r.p_value,
        )
        shown = [r for r in readings if r.feature is None] + per_feature[:MAX_FEATURE_SERIES]
        for reading in shown:
            labels = {"detector": reading.detector, "feature": reading.feature or ""}
            if reading.p_value is not None:
                self.metrics.drift_p_value.labels(**labels).set(reading.p_value)
            self.metrics.detector_statistic.labels(**labels).set(reading.statistic)
            self.metrics.detector_flagged.labels(**labels).set(1.0 if reading.flagged else 0.0)

    def _record(self, event: AlertEvent) -> None:
        """The alert's ledger event, and for a raise its finding (opened, observed again or
        reopened), in one transaction with the state it is derived from."""
        open_finding = self.open_finding.get(event.rule.name, True)
        try:
            self.ledger.append_derived(
                lambda current: alert_ledger_events(
                    event,
                    current,
                    model=self.model_name,
                    config=self.config,
                    open_finding=open_finding,
                )
            )
        except Exception as exc:  # the sinks and the page still have it
            log.error("alert %s not written to the ledger: %s", event.alert_id, exc)
        with self._lock:
            self.events_.append({"kind": event.kind, **event.record().to_payload()})
        raised = event.state == "raised"
        rule = event.rule.name
        active = any(a.rule.name == rule for a in self.alerts.active())
        self.metrics.alert_active.labels(rule=rule).set(1.0 if active else 0.0)
        if raised:
            self.metrics.alerts_raised.labels(rule=rule).inc()

    def alerts_status(self) -> dict[str, Any]:
        """The open alerts and the recent events, newest last."""
        with self._lock:
            events = list(self.events_)
        return {
            "active": [
                {
                    "alert_id": a.alert_id,
                    "rule": a.rule.name,
                    "detector": a.rule.detector,
                    "feature": a.feature,
                    "severity": a.rule.severity,
                    "owner": a.rule.owner,
                    "since": a.at,
                    "detail": a.reading.detail,
                }
                for a in self.alerts.active()
            ],
            "events": events,
        }

    def status(self) -> dict[str, Any]:
        return {
            "window": min(self._held, self.window),
            "seen": self.seen_,
            "evaluations": self.evaluations_,
            "readings": [r.as_dict() for r in self.readings_],
            "alerts": self.alerts_status(),
        }


def build_detectors(
    config: HardenConfig, reference: np.ndarray, model: Target | None
) -> list[Detector]:
    """The detectors `monitor.detectors` names, fitted to the reference rows. Those that
    need the model's outputs are left out, with a note in the log, when no model is
    served (`hardenml monitor ingest`)."""
    monitor = config.monitor
    seed, least = monitor.seed, min(monitor.min_window, 20)
    detectors: list[Detector] = []
    for name in monitor.detectors:
        if name == "feature_drift":
            detectors.append(FeatureDrift(reference, seed=seed, min_window=least))
        elif name == "mmd_drift":
            detectors.append(
                MMDDrift(reference, seed=seed, max_window=monitor.window, min_window=least)
            )
        elif name == "query_campaign":
            detectors.append(QueryCampaign(reference, seed=seed))
    wanted = [name for name in monitor.detectors if name in NEEDS_MODEL]
    if model is None:
        for name in wanted:
            log.warning("detector %s needs the served model; an ingest-only service skips it", name)
        return detectors
    predict = target_predict(model)
    reference_probabilities = predict(reference)
    low, high = config.model.input.bounds
    for name in wanted:
        if name == "prediction_shift":
            classes = list(config.model.classes)
            detectors.append(
                PredictionShift(reference_probabilities, class_names=classes, min_window=least)
            )
        elif name == "confidence_shift":
            detectors.append(ConfidenceShift(reference_probabilities, min_window=least))
        elif name == "adversarial_score":
            detectors.append(
                AdversarialScore(
                    predict,
                    reference,
                    bounds=(low, high),
                    seed=seed,
                    min_window=least,
                    max_window=max(monitor.adversarial_rows, least),
                )
            )
    return detectors


def build_sinks(config: HardenConfig) -> list[Sink]:
    """The log, and the webhook `[monitor.webhook]` names (header values written
    `env:NAME` are read from the environment)."""
    sinks: list[Sink] = [LogSink()]
    hook = config.monitor.webhook
    if hook is not None:
        headers = {
            name: os.environ.get(value[4:], "") if value.startswith("env:") else value
            for name, value in hook.headers.items()
        }
        sinks.append(
            WebhookSink(
                hook.url,
                headers=headers,
                timeout_s=hook.timeout_s,
                retries=hook.retries,
                backoff_s=hook.backoff_s,
            )
        )
    return sinks


def build_watch(
    config: HardenConfig,
    *,
    reference_rows: np.ndarray,
    model: Target | None,
    ledger: Ledger,
    metrics: MonitorMetrics,
    foreground: Foreground | None = None,
) -> Watch | None:
    """The watch `[monitor]` configures, or None when it names no detector. With
    `foreground`, the detectors' process judges between the service's requests."""
    monitor = config.monitor
    detectors = build_detectors(config, reference_rows, model)
    if not detectors:
        return None
    rules = [
        AlertRule(
            name=rule.name,
            detector=rule.detector,
            feature=rule.feature,
            threshold=rule.threshold,
            measure=rule.measure,
            direction=rule.direction,
            raise_after=rule.raise_after,
            clear_after=rule.clear_after,
            cooldown_s=rule.cooldown_s,
            severity=rule.severity,
            owner=rule.owner or config.owner_for(f"monitor:{rule.name}"),
        )
        for rule in monitor.alerts
    ]
    return Watch(
        config=config,
        detectors=detectors,
        alerts=AlertManager(rules, build_sinks(config)),
        window=monitor.window,
        min_window=monitor.min_window,
        evaluate_every_s=monitor.evaluate_every_s,
        ledger=ledger,
        metrics=metrics,
        detector_process=monitor.detector_process,
        detector_niceness=monitor.detector_niceness,
        detector_idle_priority=monitor.detector_idle_priority,
        foreground=foreground,
    )
