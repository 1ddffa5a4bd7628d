"""Alerts: hysteresis and cooldown as properties, state that survives a restart, the
ledger events and findings an alert causes, and a webhook sink against a real HTTP server
on 127.0.0.1."""

from __future__ import annotations

import itertools
import json
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hardenml.config import parse_config
from hardenml.ledger import Ledger, findings_state
from hardenml.monitor.alert_records import alert_finding, alert_ledger_events
from hardenml.monitor.alerts import EACH_FEATURE, AlertEvent, AlertManager, AlertRule
from hardenml.monitor.readings import DetectorReading, MonitorError
from hardenml.monitor.sinks import AlertDeliveryError, LogSink, WebhookSink
from hardenml.records import ALERT_RAISED, AlertRaised, AlertResolved
from workspace import DIGITS_CONFIG

SECRET_TOKEN = "Bearer s3cret-token-value"
SECRET_PATH = "/hooks/T000/B000/XXXXsecretXXXX"


def reading(
    p_value: float | None, feature: str | None = None, detector: str = "mmd_drift"
) -> DetectorReading:
    return DetectorReading(detector, feature, 1.0 - (p_value or 0.0), p_value, False, 200, "test")


def drift_rule(**overrides: Any) -> AlertRule:
    settings: dict[str, Any] = {
        "name": "input-drift",
        "detector": "mmd_drift",
        "threshold": 0.01,
        "raise_after": 2,
        "clear_after": 2,
        "cooldown_s": 60.0,
        "severity": "high",
        "owner": "ml-oncall",
    }
    return AlertRule(**(settings | overrides))


def replay(manager: AlertManager, steps: list[tuple[float, bool]]) -> list[AlertEvent]:
    events: list[AlertEvent] = []
    for at, breached in steps:
        events += manager.update([reading(0.001 if breached else 0.5)], now=at)
    return events


timelines = st.lists(
    st.tuples(st.floats(min_value=0.0, max_value=50.0), st.booleans()), max_size=60
).map(lambda pairs: [(sum(gap for gap, _ in pairs[: i + 1]), b) for i, (_, b) in enumerate(pairs)])
rules = st.builds(
    drift_rule,
    raise_after=st.integers(1, 4),
    clear_after=st.integers(1, 4),
    cooldown_s=st.sampled_from([0.0, 10.0, 60.0, 200.0]),
)


# --- hysteresis and cooldown ----------------------------------------------------------------


@given(rule=rules, timeline=timelines)
def test_events_alternate_raise_resolve_and_respect_hysteresis_and_cooldown(
    rule: AlertRule, timeline: list[tuple[float, bool]]
) -> None:
    manager = AlertManager([rule])
    events: list[tuple[int, AlertEvent]] = []
    for step, (at, breached) in enumerate(timeline):
        events += [(step, e) for e in manager.update([reading(0.001 if breached else 0.5)], now=at)]
    states = [e.state for _, e in events]
    assert states == ["raised", "resolved"] * (len(states) // 2) + ["raised"] * (len(states) % 2)
    for (_, raised), (_, resolved) in zip(events[::2], events[1::2], strict=False):
        assert resolved.alert_id == raised.alert_id and resolved.raised_at == raised.at
    for (_, before), (_, after) in itertools.pairwise(events):
        assert after.at - before.at >= rule.cooldown_s
    for step, event in events:
        needed = rule.raise_after if event.state == "raised" else rule.clear_after
        run = [b for _, b in timeline[step - needed + 1 : step + 1]] if step + 1 >= needed else []
        assert run == [event.state == "raised"] * needed
    assert [e.alert_id for e in manager.active()] == (
        [events[-1][1].alert_id] if states and states[-1] == "raised" else []
    )


@given(rule=rules, length=st.integers(1, 40), gap=st.floats(0.5, 30.0))
def test_a_lasting_condition_raises_exactly_one_alert(
    rule: AlertRule, length: int, gap: float
) -> None:
    events = replay(AlertManager([rule]), [(i * gap, True) for i in range(length)])
    assert [e.state for e in events] == (["raised"] if length >= rule.raise_after else [])


@given(rule=rules, timeline=timelines, cut=st.integers(0, 60))
def test_a_restarted_manager_resumes_where_the_old_one_stopped(
    rule: AlertRule, timeline: list[tuple[float, bool]], cut: int
) -> None:
    whole = replay(AlertManager([rule]), timeline)
    first = AlertManager([rule])
    before = replay(first, timeline[:cut])
    saved = json.loads(json.dumps(first.to_dict()))
    resumed = AlertManager.from_dict(saved, [rule])
    after = replay(resumed, timeline[cut:])
    assert [e.as_dict() for e in before + after] == [e.as_dict() for e in whole]


def test_a_restart_keeps_the_running_cooldown_and_the_open_alert() -> None:
    rule = drift_rule(raise_after=1, clear_after=1, cooldown_s=60.0)
    first = AlertManager([rule])
    (raised,) = replay(first, [(0, True)])
    resumed = AlertManager.from_dict(json.loads(json.dumps(first.to_dict())), [rule])
    assert [e.alert_id for e in resumed.active()] == [raised.alert_id]
    assert replay(resumed, [(10, False), (59, False)]) == []
    (resolved,) = replay(resumed, [(61, False)])
    assert resolved.alert_id == raised.alert_id and resolved.raised_at == 0


def test_a_noisy_window_neither_raises_nor_clears() -> None:
    manager = AlertManager([drift_rule(cooldown_s=0.0)])
    assert replay(manager, [(0, True), (1, False), (2, True), (3, False)]) == []
    raised = replay(manager, [(4, True), (5, True)])
    assert [e.state for e in raised] == ["raised"] and raised[0].at == 5
    assert replay(manager, [(6, False), (7, True), (8, False)]) == []
    assert [e.state for e in replay(manager, [(9, False)])] == ["resolved"]


def test_cooldown_holds_a_resolve_until_it_ends_then_resolves() -> None:
    manager = AlertManager([drift_rule(raise_after=1, clear_after=1, cooldown_s=60.0)])
    assert [e.state for e in replay(manager, [(0, True)])] == ["raised"]
    assert replay(manager, [(10, False), (30, False), (59, False)]) == []
    assert [e.at for e in replay(manager, [(60, False)])] == [60]


def test_the_clock_is_read_when_no_time_is_given() -> None:
    now = [100.0]
    manager = AlertManager([drift_rule(raise_after=1)], clock=lambda: now[0])
    (event,) = manager.update([reading(0.0001)])
    assert event.at == 100.0


def test_readings_without_the_measured_value_change_nothing() -> None:
    manager = AlertManager([drift_rule(raise_after=1)])
    assert manager.update([reading(None)], now=0) == []
    assert manager.update([reading(0.0001, detector="feature_drift")], now=1) == []
    assert manager.update([reading(0.0001, feature="x3")], now=2) == []  # not the overall one
    assert manager.to_dict()["tracks"] == []


def test_statistic_rules_with_direction_above() -> None:
    rule = drift_rule(measure="statistic", direction="above", threshold=0.5, raise_after=1)
    manager = AlertManager([rule])
    assert manager.update([reading(0.9)], now=0) == []  # statistic 0.1
    assert [e.state for e in manager.update([reading(0.2)], now=1)] == ["raised"]  # 0.8


def test_each_feature_rules_track_clients_apart_and_clear_one_that_left() -> None:
    rule = AlertRule(
        name="campaign",
        detector="query_campaign",
        feature=EACH_FEATURE,
        measure="statistic",
        direction="above",
        threshold=0.5,
        raise_after=1,
        clear_after=2,
        cooldown_s=0.0,
    )
    manager = AlertManager([rule])

    def campaign(*clients: str) -> list[DetectorReading]:
        flagged = [DetectorReading("query_campaign", c, 0.95, 1e-9, True, 100, "") for c in clients]
        return [
            *flagged,
            DetectorReading("query_campaign", None, len(clients), None, bool(clients), 500, ""),
        ]

    raised = manager.update(campaign("mallory", "trudy"), now=0)
    assert sorted(e.feature for e in raised) == ["mallory", "trudy"]
    assert manager.update(campaign("trudy"), now=1) == []
    resolved = manager.update(campaign("trudy"), now=2)
    assert [(e.state, e.feature) for e in resolved] == [("resolved", "mallory")]
    assert [e.feature for e in manager.active()] == ["trudy"]
    assert manager.update([], now=3) == []  # the detector did not run: nothing is judged


def test_readers_in_other_threads_see_consistent_state_while_updates_run() -> None:
    rule = AlertRule(
        name="campaign", detector="query_campaign", feature=EACH_FEATURE, raise_after=1,
        clear_after=1, cooldown_s=0.0, measure="statistic", direction="above", threshold=0.5,
    )  # fmt: skip
    manager = AlertManager([rule])
    failures: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                manager.active()
                manager.to_dict()
            except BaseException as exc:  # a dict changed size while being read
                failures.append(exc)
                return

    reader = threading.Thread(target=read)
    reader.start()
    for step in range(1000):
        clients = [f"client-{(step + i) % 97}" for i in range(step % 40)]
        manager.update(
            [DetectorReading("query_campaign", c, 0.9, None, True, 50, "") for c in clients]
            + [DetectorReading("query_campaign", None, len(clients), None, True, 500, "")],
            now=float(step),
        )
    done.set()
    reader.join()
    assert failures == []


def test_bad_rules_and_state_are_refused_clearly() -> None:
    with pytest.raises(MonitorError, match="raise_after and clear_after"):
        drift_rule(raise_after=0)
    with pytest.raises(MonitorError, match="severity must be one of"):
        drift_rule(severity="urgent")
    with pytest.raises(MonitorError, match="repeated: input-drift"):
        AlertManager([drift_rule(), drift_rule()])
    with pytest.raises(MonitorError, match="delete the saved alert state"):
        AlertManager.from_dict({"version": 99}, [drift_rule()])


def test_state_of_a_rule_no_longer_configured_is_dropped() -> None:
    manager = AlertManager([drift_rule(raise_after=1)])
    replay(manager, [(0, True)])
    resumed = AlertManager.from_dict(manager.to_dict(), [drift_rule(name="other", raise_after=1)])
    assert resumed.active() == [] and resumed.to_dict()["tracks"] == []


# --- records, ledger events and findings --------------------------------------------------


def test_events_carry_typed_ledger_payloads() -> None:
    manager = AlertManager([drift_rule(raise_after=1, clear_after=1, cooldown_s=0.0)])
    (raised,) = replay(manager, [(0, True)])
    (resolved,) = replay(manager, [(5, False)])
    record = raised.record()
    assert isinstance(record, AlertRaised) and record.owner == "ml-oncall"
    assert AlertRaised.from_payload(record.to_payload()) == record
    closed = resolved.record()
    assert isinstance(closed, AlertResolved) and closed.raised_at == 0 and closed.at == 5
    assert AlertResolved.from_payload(closed.to_payload()) == closed
    assert raised.payload()["kind"] == ALERT_RAISED == raised.kind


def test_an_alert_is_a_ledger_event_and_opens_one_finding_with_owner_and_due(
    tmp_path: Path,
) -> None:
    config = parse_config(
        DIGITS_CONFIG.format(
            weights="model.safetensors",
            min_clean=0.8,
            min_robust=0.5,
            max_samples=100,
            integrity="false",
        ),
        root=tmp_path,
    )
    ledger = Ledger(tmp_path / "hardenml.db")
    manager = AlertManager([drift_rule(raise_after=1, clear_after=1, cooldown_s=0.0)])
    today = date(2026, 12, 1)

    def record(events: list[AlertEvent]) -> list[str]:
        kinds: list[str] = []
        for event in events:
            written = ledger.append_derived(
                lambda current, e=event: alert_ledger_events(
                    e, current, model="digits-mlp", config=config, today=today
                )
            )
            kinds += [w.kind for w in written]
        return kinds

    assert record(replay(manager, [(0, True)])) == ["alert.raised", "finding.opened"]
    assert record(replay(manager, [(1, False)])) == ["alert.resolved"]
    assert record(replay(manager, [(2, True)])) == ["alert.raised", "finding.observed"]
    (finding,) = findings_state(ledger.events()).values()
    assert finding.owner == "ml-oncall" and finding.severity == "high"
    assert finding.due == (today + timedelta(days=config.policy.sla_days.high)).isoformat()
    assert finding.metric == "monitor.mmd_drift" and "drifted" in finding.title


def test_the_finding_of_a_per_feature_alert_names_the_feature() -> None:
    rule = drift_rule(detector="feature_drift", feature=EACH_FEATURE, raise_after=1)
    (event,) = AlertManager([rule]).update([reading(0.0001, "x12", "feature_drift")], now=0)
    finding = alert_finding(event, model="m")
    assert finding.slice == "x12" and "(x12)" in finding.title
    other = alert_finding(
        AlertManager([rule]).update([reading(0.0001, "x13", "feature_drift")], now=0)[0], model="m"
    )
    assert other.fingerprint != finding.fingerprint


# --- sinks ---------------------------------------------------------------------------------------


class Receiver(BaseHTTPRequestHandler):
    """Answers 500 to the first `server.failures` requests, then 200 (or `server.status`)."""

    server: FlakyServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((dict(self.headers), body))
        failing = len(self.server.received) <= self.server.failures
        status = 500 if failing else self.server.status
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


class FlakyServer(ThreadingHTTPServer):
    def __init__(self, failures: int, status: int = 200) -> None:
        super().__init__(("127.0.0.1", 0), Receiver)
        self.failures = failures
        self.status = status
        self.received: list[tuple[dict[str, str], bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{SECRET_PATH}"


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[FlakyServer] = []

    def start(failures: int, status: int = 200) -> FlakyServer:
        server = FlakyServer(failures, status)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_webhook_retries_two_server_errors_then_delivers(serve: Any) -> None:
    server = serve(failures=2)
    waits: list[float] = []
    sink = WebhookSink(
        server.url, {"Authorization": SECRET_TOKEN}, retries=3, backoff_s=0.5, sleep=waits.append
    )
    payload = {"kind": "alert.raised", "alert_id": "ALR-1", "rule": "input-drift"}
    sink.send(payload)
    assert len(server.received) == 3 and sink.attempts_sent == 3
    assert waits == [0.5, 1.0]  # exponential backoff
    headers, body = server.received[-1]
    assert json.loads(body) == payload
    assert (
        headers["Authorization"] == SECRET_TOKEN and headers["Content-Type"] == "application/json"
    )


def test_alert_manager_delivers_to_a_real_webhook_and_the_log(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(failures=0)
    manager = AlertManager([drift_rule(raise_after=1)], [LogSink(), WebhookSink(server.url)])
    with caplog.at_level(logging.INFO, logger="hardenml.monitor.alerts"):
        (event,) = manager.update([reading(0.0001)], now=0)
    assert json.loads(server.received[0][1]) == event.payload()
    assert any(
        event.alert_id in r.getMessage() and "raised" in r.getMessage() for r in caplog.records
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_dead_webhook_gives_a_clear_error_after_retries_without_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    sink = WebhookSink(
        f"http://127.0.0.1:{port}{SECRET_PATH}?token=abc",
        {"Authorization": SECRET_TOKEN},
        retries=2,
        backoff_s=0.01,
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(AlertDeliveryError) as caught:
        sink.send({"kind": "alert.raised"})
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message and "after 3 attempts (retries = 2)" in message
    assert "could not be reached" in message and "receiver is up" in message
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    logged = caplog.text + message + repr(sink)
    assert "s3cret" not in logged and "XXXXsecretXXXX" not in logged
    assert "token=abc" not in logged


def test_a_client_error_is_not_retried(serve: Any) -> None:
    server = serve(failures=0, status=403)
    sink = WebhookSink(server.url, retries=3, backoff_s=0.01)
    with pytest.raises(AlertDeliveryError, match=r"answered HTTP 403.*credentials"):
        sink.send({"kind": "alert.raised"})
    assert len(server.received) == 1


def test_a_failing_sink_is_counted_and_the_alert_still_stands() -> None:
    dead = WebhookSink(f"http://127.0.0.1:{free_port()}/hook", retries=0)
    manager = AlertManager([drift_rule(raise_after=1)], [dead])
    (event,) = manager.update([reading(0.0001)], now=0)
    assert manager.failed_deliveries == 1 and manager.active() == [event]


def test_a_webhook_url_must_be_http() -> None:
    with pytest.raises(MonitorError, match="http"):
        WebhookSink("ftp://example.org/hook")


def test_log_sink_logs_raises_as_warnings_and_resolves_as_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = AlertManager([drift_rule(raise_after=1, clear_after=1, cooldown_s=0.0)], [LogSink()])
    with caplog.at_level(logging.INFO, logger="hardenml.monitor.alerts"):
        (raised,) = replay(manager, [(0, True)])
        replay(manager, [(1, False)])
    levels = [(r.levelno, r.getMessage().split(":")[0]) for r in caplog.records]
    assert levels == [
        (logging.WARNING, f"alert {raised.alert_id} raised"),
        (logging.INFO, f"alert {raised.alert_id} resolved"),
    ]
    assert caplog.records[0].alert == raised.payload()  # type: ignore[attr-defined]
