"""The service's Prometheus metrics, in a registry of its own (no global state: two
services in one process, as in the tests, keep their counts apart).

Names follow the Prometheus conventions: a `hardenml_` prefix, base units (seconds),
`_total` on counters. Per-feature drift p-values are exported for at most
`MAX_FEATURE_SERIES` features (the smallest p-values), so a 784-pixel image model does
not create 784 series per detector; the detector's overall reading is always exported.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from hardenml.monitor.batch_histogram import BatchHistogram

MAX_FEATURE_SERIES = 20
# Request latencies of a small model served on a CPU: sub-millisecond to a second.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
)
CONFIDENCE_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


class MonitorMetrics:
    """Every metric the service exports; `render()` is the `/metrics` body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.predictions = Counter(
            "hardenml_predictions",
            "Predictions made (one per input row), by model version and source.",
            ["model_version", "source"],
            registry=registry,
        )
        self.requests = Counter(
            "hardenml_requests",
            "HTTP requests answered, by route and status code.",
            ["route", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "hardenml_request_duration_seconds",
            "Time from a request's arrival to its answer, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.model_seconds = Histogram(
            "hardenml_model_duration_seconds",
            "Time the model's forward pass took per request, by model version.",
            ["model_version"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        # Observed per request, for a whole batch at once (`BatchHistogram`).
        self.confidence = BatchHistogram(
            "hardenml_prediction_confidence",
            "Top-class probability of each prediction.",
            buckets=CONFIDENCE_BUCKETS,
            registry=registry,
        )
        self.traffic_share = Gauge(
            "hardenml_traffic_share",
            "Share of requests each model version receives.",
            ["model_version"],
            registry=registry,
        )
        self.drift_p_value = Gauge(
            "hardenml_drift_p_value",
            "Latest p-value of each detector (per feature where it tests features).",
            ["detector", "feature"],
            registry=registry,
        )
        self.detector_statistic = Gauge(
            "hardenml_detector_statistic",
            "Latest statistic of each detector (per feature where it tests features).",
            ["detector", "feature"],
            registry=registry,
        )
        self.detector_flagged = Gauge(
            "hardenml_detector_flagged",
            "1 while a detector's latest reading is flagged, else 0.",
            ["detector", "feature"],
            registry=registry,
        )
        self.alert_active = Gauge(
            "hardenml_alert_active",
            "1 while an alert rule is raised, else 0.",
            ["rule"],
            registry=registry,
        )
        self.alerts_raised = Counter(
            "hardenml_alerts_raised",
            "Alerts raised, by rule.",
            ["rule"],
            registry=registry,
        )
        self.telemetry_backlog = Gauge(
            "hardenml_telemetry_backlog_records",
            "Telemetry records submitted and not yet committed (in the log or in memory).",
            registry=registry,
        )
        self.telemetry_held = Gauge(
            "hardenml_telemetry_held_records",
            "Telemetry records waiting in memory because the log could not take them.",
            registry=registry,
        )
        self.telemetry_written = Gauge(
            "hardenml_telemetry_written_records",
            "Telemetry records the background writer committed since start.",
            registry=registry,
        )
        self.traffic_switches = Counter(
            "hardenml_traffic_switches",
            "Blue/green switches and rollbacks.",
            registry=registry,
        )

    def watch_writer(
        self,
        backlog: Callable[[], float],
        written: Callable[[], float],
        held: Callable[[], float],
    ) -> None:
        """Read the writer's counters at scrape time (nothing to update per request)."""
        self.telemetry_backlog.set_function(backlog)
        self.telemetry_written.set_function(written)
        self.telemetry_held.set_function(held)

    def set_shares(self, shares: dict[str, float], known: list[str]) -> None:
        for version in known:
            self.traffic_share.labels(model_version=version).set(shares.get(version, 0.0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
