"""Alert rules over detector readings, with hysteresis and a cooldown so alerts do not flap.

A rule watches one detector's readings (its overall reading, one feature, or each feature
apart) and compares the p-value or the statistic with a threshold. A condition must breach
on `raise_after` consecutive evaluations before it raises an alert, and be healthy on
`clear_after` consecutive ones before the alert resolves (hysteresis: one noisy window
neither raises nor clears). After any event of a rule and feature, no other event of the
same pair happens for `cooldown_s` seconds, so an alert that resolves cannot re-raise a
minute later, nor a fresh alert resolve at once. A lasting condition thus raises exactly
one alert, which stays open (`active()`) until the condition clears.

The state (counters, open alerts) survives a restart through `to_dict` / `from_dict`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from hardenml.monitor.readings import DetectorReading, MonitorError
from hardenml.monitor.sinks import AlertDeliveryError, Sink
from hardenml.records import (
    ALERT_RAISED,
    ALERT_RESOLVED,
    SEVERITIES,
    AlertRaised,
    AlertResolved,
    Severity,
)

log = logging.getLogger(__name__)

# `AlertRule.feature` for a rule that tracks every feature of its detector apart (one alert
# per drifted feature, or per client of the query-campaign detector).
EACH_FEATURE = "*"
Measure = Literal["p_value", "statistic"]
Direction = Literal["below", "above"]
AlertState = Literal["raised", "resolved"]
_STATE_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class AlertRule:
    """When a detector's readings raise an alert, and for whom.

    `feature`: None watches the detector's overall reading, a name that feature's reading,
    `EACH_FEATURE` ("*") every feature apart. A reading breaches when its `measure`
    ("p_value" or "statistic") is `direction` ("below" or "above") `threshold`; a reading
    without a p-value never breaches a p-value rule.
    """

    name: str
    detector: str
    feature: str | None = None
    threshold: float = 0.01
    measure: Measure = "p_value"
    direction: Direction = "below"
    raise_after: int = 3
    clear_after: int = 3
    cooldown_s: float = 300.0
    severity: Severity = "medium"
    owner: str = "unassigned"

    def __post_init__(self) -> None:
        where = f"alert rule {self.name!r}"
        if not self.name or not self.detector:
            raise MonitorError("an alert rule needs a name and a detector")
        if self.measure not in ("p_value", "statistic"):
            raise MonitorError(f'{where}: measure must be "p_value" or "statistic"')
        if self.direction not in ("below", "above"):
            raise MonitorError(f'{where}: direction must be "below" or "above"')
        if self.raise_after < 1 or self.clear_after < 1:
            raise MonitorError(f"{where}: raise_after and clear_after must be at least 1")
        if self.cooldown_s < 0:
            raise MonitorError(f"{where}: cooldown_s must not be negative")
        if self.severity not in SEVERITIES:
            raise MonitorError(f"{where}: severity must be one of {', '.join(SEVERITIES)}")

    def applies_to(self, reading: DetectorReading) -> bool:
        if reading.detector != self.detector:
            return False
        if self.feature == EACH_FEATURE:
            return reading.feature is not None
        return reading.feature == self.feature

    def breached(self, reading: DetectorReading) -> bool | None:
        """Whether `reading` breaches the threshold; None when it has no such value."""
        value = reading.p_value if self.measure == "p_value" else reading.statistic
        if value is None:
            return None
        return value < self.threshold if self.direction == "below" else value > self.threshold

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class AlertEvent:
    """An alert raised or resolved. `feature` is what the alert is about (the reading's
    feature; for an `EACH_FEATURE` rule, the feature that drifted); `raised_at` is when the
    alert was raised (equal to `at` for a raise)."""

    rule: AlertRule
    state: AlertState
    reading: DetectorReading
    at: float
    alert_id: str
    feature: str | None = None
    raised_at: float = 0.0

    @property
    def kind(self) -> str:
        """The ledger event kind: `alert.raised` or `alert.resolved`."""
        return ALERT_RAISED if self.state == "raised" else ALERT_RESOLVED

    def record(self) -> AlertRaised | AlertResolved:
        """The typed payload of this event's ledger event."""
        reading = self.reading
        if self.state == "raised":
            return AlertRaised(
                alert_id=self.alert_id,
                rule=self.rule.name,
                detector=self.rule.detector,
                feature=self.feature,
                severity=self.rule.severity,
                owner=self.rule.owner,
                statistic=reading.statistic,
                p_value=reading.p_value,
                n=reading.n,
                detail=reading.detail,
                at=self.at,
            )
        return AlertResolved(
            alert_id=self.alert_id,
            rule=self.rule.name,
            detector=self.rule.detector,
            feature=self.feature,
            statistic=reading.statistic,
            p_value=reading.p_value,
            n=reading.n,
            detail=reading.detail,
            at=self.at,
            raised_at=self.raised_at,
        )

    def payload(self) -> dict[str, Any]:
        """What a sink sends: the ledger payload plus its `kind`."""
        return {"kind": self.kind, **self.record().to_payload()}

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule.name,
            "state": self.state,
            "reading": self.reading.as_dict(),
            "at": self.at,
            "alert_id": self.alert_id,
            "feature": self.feature,
            "raised_at": self.raised_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], rule: AlertRule) -> AlertEvent:
        return cls(
            rule=rule,
            state=data["state"],
            reading=DetectorReading.from_dict(data["reading"]),
            at=float(data["at"]),
            alert_id=str(data["alert_id"]),
            feature=data.get("feature"),
            raised_at=float(data.get("raised_at", data["at"])),
        )


@dataclass
class _Track:
    """One rule's state for one feature; mutable, owned by the manager alone."""

    breaches: int = 0
    healthy: int = 0
    last_event_at: float | None = None
    open: AlertEvent | None = None


@dataclass
class _Observation:
    feature: str | None
    reading: DetectorReading
    breached: bool


class AlertManager:
    """Applies `rules` to each batch of readings and sends every event to every sink.

    `clock`: seconds since the epoch, read when `update` is not given `now`. A sink that
    fails (`AlertDeliveryError`) is logged and counted in `failed_deliveries`; the alert's
    state is kept regardless, so a broken webhook never loses or repeats an alert.
    Safe to share between threads: `update` runs in a watcher thread while request
    handlers read `active()`; sinks are called outside the lock, so a slow webhook does not
    hold up readers.
    """

    def __init__(
        self,
        rules: Sequence[AlertRule],
        sinks: Sequence[Sink] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        names = [rule.name for rule in rules]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise MonitorError(
                f"alert rule names must be unique; repeated: {', '.join(duplicated)}"
            )
        self.rules = list(rules)
        self.sinks = list(sinks)
        self.clock = clock
        self.failed_deliveries = 0
        self._tracks: dict[tuple[str, str | None], _Track] = {}
        self._sequence = 0
        self._lock = threading.Lock()

    def update(
        self, readings: Iterable[DetectorReading], now: float | None = None
    ) -> list[AlertEvent]:
        """Advance every rule by one evaluation; the events it caused, already sent."""
        at = self.clock() if now is None else now
        batch = list(readings)
        events: list[AlertEvent] = []
        with self._lock:
            for rule in self.rules:
                for seen in self._observations(rule, batch):
                    event = self._step(rule, seen, at)
                    if event is not None:
                        events.append(event)
            self._forget_settled(at)
        for event in events:
            self._deliver(event)
        return events

    def active(self) -> list[AlertEvent]:
        """The open alerts (their raise events), oldest first."""
        with self._lock:
            open_alerts = [t.open for t in self._tracks.values() if t.open is not None]
        return sorted(open_alerts, key=lambda e: (e.at, e.alert_id))

    def _observations(self, rule: AlertRule, batch: list[DetectorReading]) -> list[_Observation]:
        found: dict[str | None, _Observation] = {}
        for reading in batch:
            if not rule.applies_to(reading):
                continue
            breached = rule.breached(reading)
            if breached is not None:
                found[reading.feature] = _Observation(reading.feature, reading, breached)
        if rule.feature == EACH_FEATURE:
            # A detector that reported this time but not on a feature it flagged before
            # (a client that stopped, a feature no longer listed) counts that feature as
            # healthy; its stand-in reading is the detector's overall one.
            of_detector = [r for r in batch if r.detector == rule.detector]
            if of_detector:
                stand_in = next((r for r in of_detector if r.feature is None), of_detector[0])
                for name, feature in self._tracks:
                    if name == rule.name and feature not in found:
                        found[feature] = _Observation(feature, stand_in, False)
        return list(found.values())

    def _step(self, rule: AlertRule, seen: _Observation, at: float) -> AlertEvent | None:
        track = self._tracks.setdefault((rule.name, seen.feature), _Track())
        if seen.breached:
            track.breaches, track.healthy = track.breaches + 1, 0
        else:
            track.breaches, track.healthy = 0, track.healthy + 1
        cooling = track.last_event_at is not None and at - track.last_event_at < rule.cooldown_s
        if cooling:
            return None
        if track.open is None and track.breaches >= rule.raise_after:
            self._sequence += 1
            key = f"{rule.name}|{seen.feature}|{at!r}|{self._sequence}"
            alert_id = f"ALR-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
            event = AlertEvent(rule, "raised", seen.reading, at, alert_id, seen.feature, at)
            track.open, track.last_event_at = event, at
            return event
        if track.open is not None and track.healthy >= rule.clear_after:
            raised = track.open
            event = AlertEvent(
                rule, "resolved", seen.reading, at, raised.alert_id, seen.feature, raised.at
            )
            track.open, track.last_event_at = None, at
            return event
        return None

    def _forget_settled(self, at: float) -> None:
        """Drop tracks with nothing to remember: no open alert, no breach in a row, and no
        cooldown running (keeps the state small when many clients come and go)."""
        cooldowns = {rule.name: rule.cooldown_s for rule in self.rules}
        for key, track in list(self._tracks.items()):
            cooled = track.last_event_at is None or at - track.last_event_at >= cooldowns[key[0]]
            if track.open is None and track.breaches == 0 and cooled:
                del self._tracks[key]

    def _deliver(self, event: AlertEvent) -> None:
        payload = event.payload()
        for sink in self.sinks:
            try:
                sink.send(payload)
            except AlertDeliveryError as exc:
                self.failed_deliveries += 1
                log.warning("alert %s (%s) was not delivered: %s", event.alert_id, event.state, exc)

    def to_dict(self) -> dict[str, Any]:
        """The state to persist: counters, cooldowns and open alerts, as JSON-ready data."""
        with self._lock:
            tracks = [
                {
                    "rule": name,
                    "feature": feature,
                    "breaches": track.breaches,
                    "healthy": track.healthy,
                    "last_event_at": track.last_event_at,
                    "open": None if track.open is None else track.open.as_dict(),
                }
                for (name, feature), track in sorted(
                    self._tracks.items(), key=lambda item: (item[0][0], str(item[0][1]))
                )
            ]
            return {"version": _STATE_VERSION, "sequence": self._sequence, "tracks": tracks}

    @classmethod
    def from_dict(
        cls,
        data: dict[str, Any],
        rules: Sequence[AlertRule],
        sinks: Sequence[Sink] = (),
        clock: Callable[[], float] = time.time,
    ) -> AlertManager:
        """A manager that resumes the state `to_dict` wrote, under the current `rules`; the
        state of a rule no longer configured is dropped, and its open alerts with it."""
        if data.get("version") != _STATE_VERSION:
            raise MonitorError(
                f"alert state of version {data.get('version')!r}; this hardenml reads "
                f"version {_STATE_VERSION}: delete the saved alert state to start afresh"
            )
        manager = cls(rules, sinks, clock)
        by_name = {rule.name: rule for rule in rules}
        manager._sequence = int(data.get("sequence", 0))
        for saved in data.get("tracks", []):
            rule = by_name.get(saved["rule"])
            if rule is None:
                continue
            opened = saved.get("open")
            manager._tracks[(rule.name, saved.get("feature"))] = _Track(
                breaches=int(saved["breaches"]),
                healthy=int(saved["healthy"]),
                last_event_at=saved.get("last_event_at"),
                open=None if opened is None else AlertEvent.from_dict(opened, rule),
            )
        return manager


__all__ = ["EACH_FEATURE", "AlertEvent", "AlertManager", "AlertRule"]
