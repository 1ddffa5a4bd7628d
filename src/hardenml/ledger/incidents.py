"""Incidents as ledger events: opened, updated, closed, each linked to findings and monitor
alerts, and folded into their current state like findings are.

An incident's timeline is every event linked to it, in chain order: its own events, the
events of its findings (detection, reviews, fixes), the monitor alerts it names (events
whose payload carries one of its `alert_id`s), and what happened to the model of its
findings from the first of those events on (scans, patches, validations, gate decisions,
releases), up to its close.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hardenml.ledger.findings import ReviewError, findings_state, resolve_finding
from hardenml.ledger.store import Event, Ledger, LedgerError
from hardenml.records import (
    GATE_DECIDED,
    INCIDENT_CLOSED,
    INCIDENT_OPENED,
    INCIDENT_UPDATED,
    RUN_COMPLETED,
    IncidentClosed,
    IncidentFamily,
    IncidentOpened,
    IncidentStatus,
    IncidentUpdated,
    Severity,
)

# Spelled here as the patch, validate and gate rooms record them; the ledger room may not
# import those rooms (they come after it in the loop).
_PATCHED, _VALIDATED, _RELEASED = "model.patched", "validation.completed", "model.released"


class IncidentError(LedgerError):
    """An incident command the ledger's state does not allow; the message says why."""


@dataclass
class IncidentState:
    incident_id: str
    title: str
    family: str
    severity: str
    status: str  # investigating, mitigated, monitoring, closed
    findings: list[str]
    alerts: list[str]
    summary: str
    opened: str
    opened_by: str
    opened_seq: int
    closed: str | None = None
    closed_seq: int | None = None
    resolution: str | None = None
    notes: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def incidents_state(events: Sequence[Event]) -> dict[str, IncidentState]:
    """Current incidents by id, folded from `incident.*` events in chain order."""
    state: dict[str, IncidentState] = {}
    for event in events:
        p = event.payload
        if event.kind == INCIDENT_OPENED:
            opened = IncidentOpened.from_payload(p)
            state[opened.incident_id] = IncidentState(
                incident_id=opened.incident_id,
                title=opened.title,
                family=opened.family,
                severity=opened.severity,
                status="investigating",
                findings=list(opened.findings),
                alerts=list(opened.alerts),
                summary=opened.summary,
                opened=event.ts,
                opened_by=event.actor,
                opened_seq=event.seq,
            )
        elif event.kind == INCIDENT_UPDATED and p.get("incident_id") in state:
            update = IncidentUpdated.from_payload(p)
            current = state[update.incident_id]
            current.findings += [f for f in update.findings if f not in current.findings]
            current.alerts += [a for a in update.alerts if a not in current.alerts]
            current.status = update.status or current.status
            current.notes.append(
                {"seq": event.seq, "ts": event.ts, "by": event.actor, "note": update.note}
            )
        elif event.kind == INCIDENT_CLOSED and p.get("incident_id") in state:
            closed = IncidentClosed.from_payload(p)
            current = state[closed.incident_id]
            current.status, current.resolution = "closed", closed.resolution
            current.closed, current.closed_seq = event.ts, event.seq
    return state


def _finding_ids(events: list[Event], given: Sequence[str]) -> list[str]:
    """The finding ids the user means (`resolve_finding` accepts prefixes), or an error."""
    state = findings_state(events)
    try:
        return list(dict.fromkeys(resolve_finding(state, text).finding_id for text in given))
    except ReviewError as exc:
        raise IncidentError(str(exc)) from None


def _incident(events: list[Event], incident_id: str) -> IncidentState:
    state = incidents_state(events)
    if incident_id not in state:
        known = ", ".join(sorted(state)) or "none yet"
        raise IncidentError(f"no incident {incident_id!r} (incidents: {known})")
    return state[incident_id]


def open_incident(
    ledger: Ledger,
    *,
    title: str,
    family: IncidentFamily,
    severity: Severity,
    findings: Sequence[str] = (),
    alerts: Sequence[str] = (),
    summary: str = "",
    actor: str,
) -> Event:
    """Record an incident; its id (`INC-0001`, ...) is the next free one, chosen under the
    ledger's write lock so two operators never open the same id."""

    def build(current: list[Event]) -> list[tuple[str, dict[str, Any]]]:
        number = 1 + sum(e.kind == INCIDENT_OPENED for e in current)
        opened = IncidentOpened(
            incident_id=f"INC-{number:04d}",
            title=title,
            family=family,
            severity=severity,
            findings=_finding_ids(current, findings),
            alerts=list(dict.fromkeys(alerts)),
            summary=summary,
        )
        return [(INCIDENT_OPENED, opened.to_payload())]

    return ledger.append_derived(build, actor=actor)[0]


def update_incident(
    ledger: Ledger,
    incident_id: str,
    *,
    note: str,
    findings: Sequence[str] = (),
    alerts: Sequence[str] = (),
    status: IncidentStatus | None = None,
    actor: str,
) -> Event:
    def build(current: list[Event]) -> list[tuple[str, dict[str, Any]]]:
        if _incident(current, incident_id).status == "closed":
            raise IncidentError(f"{incident_id} is closed; open a new incident for what follows")
        update = IncidentUpdated(
            incident_id=incident_id,
            note=note,
            findings=_finding_ids(current, findings),
            alerts=list(dict.fromkeys(alerts)),
            status=status,
        )
        return [(INCIDENT_UPDATED, update.to_payload())]

    return ledger.append_derived(build, actor=actor)[0]


def close_incident(ledger: Ledger, incident_id: str, *, resolution: str, actor: str) -> Event:
    def build(current: list[Event]) -> list[tuple[str, dict[str, Any]]]:
        if _incident(current, incident_id).status == "closed":
            raise IncidentError(f"{incident_id} is already closed")
        closed = IncidentClosed(incident_id=incident_id, resolution=resolution)
        return [(INCIDENT_CLOSED, closed.to_payload())]

    return ledger.append_derived(build, actor=actor)[0]


def incident_timeline(events: Sequence[Event], incident_id: str) -> list[Event]:
    """Every event linked to the incident, in chain order (see the module docstring)."""
    incident = _incident(list(events), incident_id)
    findings = set(incident.findings)
    alerts = set(incident.alerts)
    state = findings_state(list(events))
    models = {state[f].model for f in findings if f in state}
    # The scans that detected the findings, which precede their `finding.opened` events.
    detecting = {str(state[f].history[0].get("run_id")) for f in findings if f in state}
    linked: list[Event] = []
    shas: set[str] = set()  # the model files of those models, as they appear
    started = False
    end = incident.closed_seq if incident.closed_seq is not None else float("inf")
    for event in events:
        if event.seq > end:
            break
        p = event.payload
        own = p.get("incident_id") == incident_id and event.kind.startswith("incident.")
        of_finding = event.kind.startswith("finding.") and p.get("finding_id") in findings
        of_alert = p.get("alert_id") in alerts if alerts else False
        if event.kind == RUN_COMPLETED and p.get("model") in models:
            shas.add(str(p.get("model_sha256")))
        detected = event.kind == RUN_COMPLETED and p.get("run_id") in detecting
        of_model = detected or (started and _about_model(event, models, shas))
        if own or of_finding or of_alert or of_model:
            linked.append(event)
            started = True
    return linked


def _about_model(event: Event, models: set[str], shas: set[str]) -> bool:
    """Whether a scan, patch, validation, gate decision or release concerns the models."""
    p = event.payload
    if event.kind in (RUN_COMPLETED, GATE_DECIDED, _RELEASED):
        return p.get("model") in models
    if event.kind == _PATCHED and p.get("parent_sha256") in shas:
        shas.add(str(p.get("artifact_sha256")))
        return True
    if event.kind == _VALIDATED:
        return bool({p.get("candidate_sha256"), p.get("baseline_sha256")} & shas)
    return False
