"""An alert as the ledger records it: its `alert.*` event, and the finding it opens.

An alert is triage work like a scan finding: it gets an owner (the rule's) and a due date
from the policy's SLA days for its severity (`policy.sla_days`, as scan findings do,
`hardenml.ledger.due_date`). Its fingerprint is (model, detector, feature), so the same
condition seen again observes the open finding, or reopens a closed one, rather than
opening a second. A resolved alert does not close its finding: the condition cleared, but
why it happened is for the owner to review (`hardenml findings review`).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from hardenml.config import HardenConfig
from hardenml.ledger import Event, due_date, findings_state
from hardenml.monitor.alerts import AlertEvent
from hardenml.records import Finding, fingerprint

# What each detector's alert means for an attacker and what to do about it, in words.
_MEANING: dict[str, tuple[str, str, str]] = {
    "feature_drift": (
        "input features drifted from the reference data",
        "Inputs unlike the data the model was validated on: its measured accuracy and "
        "robustness no longer describe its behaviour, and a shift can hide an attack.",
        "Find the source of the shift; re-scan the model on recent traffic, and retrain "
        "or recalibrate on it if the shift is legitimate.",
    ),
    "mmd_drift": (
        "the joint input distribution drifted from the reference data",
        "Inputs unlike the data the model was validated on: its measured accuracy and "
        "robustness no longer describe its behaviour, and a shift can hide an attack.",
        "Find the source of the shift; re-scan the model on recent traffic, and retrain "
        "or recalibrate on it if the shift is legitimate.",
    ),
    "prediction_shift": (
        "the predicted classes shifted from the reference",
        "The model decides differently than at release: a label shift, a drifted input "
        "source or targeted inputs steering it to one class.",
        "Check whether the class mix of the traffic changed; if not, inspect the inputs "
        "behind the over-predicted class and re-scan.",
    ),
    "confidence_shift": (
        "the model's confidence shifted from the reference",
        "Confidence moved away from what was calibrated at release, so thresholds and "
        "abstention built on it no longer hold.",
        "Re-check calibration on recent traffic (hardenml patch with a temperature) and "
        "look for drifted or adversarial inputs.",
    ),
    "adversarial_score": (
        "inputs unstable under small noise, the mark of adversarial examples",
        "A share of the traffic sits just across decision boundaries, as adversarial "
        "examples found by an attacker do.",
        "Inspect the flagged inputs and their clients; harden the model (adversarial "
        "training, input sanitisation) and re-scan against gradient attacks.",
    ),
    "query_campaign": (
        "a client sends many near-duplicate queries, the mark of a black-box attack",
        "A client probes the model around a few inputs, as a score- or decision-based "
        "attack (Square, HopSkipJump) does while it searches for an adversarial example.",
        "Rate-limit or block the client, return labels rather than scores, and re-scan "
        "against black-box threats.",
    ),
}
_GENERIC = (
    "a monitored condition breached its alert rule",
    "The live model behaves differently than it did when released.",
    "Inspect the detector's readings and the traffic behind them, then re-scan the model.",
)


def alert_finding(event: AlertEvent, *, model: str) -> Finding:
    """The finding an alert stands for, owned by its rule's owner at its rule's severity."""
    rule, reading = event.rule, event.reading
    what, exploitation, remediation = _MEANING.get(rule.detector, _GENERIC)
    metric = f"monitor.{rule.detector}"
    value = (
        reading.p_value
        if rule.measure == "p_value" and reading.p_value is not None
        else reading.statistic
    )
    on = "" if event.feature is None else f" ({event.feature})"
    return Finding(
        fingerprint=fingerprint(model, None, metric, None, event.feature),
        title=f"Monitor rule {rule.name}: {what}{on}",
        model=model,
        threat=None,
        metric=metric,
        budget=None,
        severity=rule.severity,
        value=float(value),
        threshold=rule.threshold,
        ci=reading.interval or (float(value), float(value)),
        n=reading.n,
        owner=rule.owner,
        exploitation=exploitation,
        remediation=remediation,
        evidence=[{"alert_id": event.alert_id, "at": event.at, "reading": reading.as_dict()}],
        slice=event.feature,
    )


def alert_ledger_events(
    event: AlertEvent,
    current: list[Event],
    *,
    model: str,
    config: HardenConfig,
    open_finding: bool = True,
    today: date | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """The ledger events an alert event causes, given the ledger's `current` events: its
    `alert.raised` / `alert.resolved` event, and for a raise (when `open_finding`) the
    finding opened, observed again, or reopened. Meant for `Ledger.append_derived`, so the
    finding's state is read and written in one transaction:

        ledger.append_derived(lambda current: alert_ledger_events(event, current, ...))
    """
    events: list[tuple[str, dict[str, Any]]] = [(event.kind, event.record().to_payload())]
    if event.state != "raised" or not open_finding:
        return events
    finding = alert_finding(event, model=model)
    payload = {
        **finding.as_dict(),
        "run_id": event.alert_id,
        "due": due_date(config, finding.severity, today),
    }
    known = findings_state(current).get(finding.finding_id)
    if known is None:
        events.append(("finding.opened", payload))
    elif known.is_open or known.status_on() == "accepted":
        events.append(("finding.observed", payload))
    else:
        events.append(("finding.reopened", {**payload, "reason": f"alert {event.alert_id}"}))
    return events
