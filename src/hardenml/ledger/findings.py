"""Findings and runs as derived state: a fold over the ledger's events.

Nothing here is stored besides events. A scan's findings are reconciled with what the
ledger already knows: a new vulnerability is opened, a known one observed again, a
fixed one that comes back is reopened, and an open one the scan no longer sees (for a
check it did evaluate) is marked fixed, with the run as evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from hardenml.config import HardenConfig
from hardenml.ledger.store import Event, Ledger
from hardenml.scan import Finding, ScanResult, fingerprint

OPEN_STATES = ("open", "reopened")


@dataclass
class FindingState:
    finding_id: str
    fingerprint: str
    title: str
    model: str
    threat: str | None
    metric: str
    budget: float | None
    severity: str
    status: str
    owner: str
    due: str
    value: float
    threshold: float
    ci: list[float]
    exploitation: str
    remediation: str
    evidence: list[dict[str, Any]]
    opened: str
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATES

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def findings_state(events: list[Event]) -> dict[str, FindingState]:
    """Current findings by id, folded from `finding.*` events in chain order."""
    state: dict[str, FindingState] = {}
    for event in events:
        if not event.kind.startswith("finding."):
            continue
        p = event.payload
        fid = p["finding_id"]
        entry: dict[str, Any] = {
            "seq": event.seq,
            "ts": event.ts,
            "kind": event.kind,
            "actor": event.actor,
            **{k: p[k] for k in ("run_id", "value", "severity", "reason") if k in p},
        }
        if event.kind == "finding.opened":
            state[fid] = FindingState(
                finding_id=fid,
                fingerprint=p["fingerprint"],
                title=p["title"],
                model=p["model"],
                threat=p["threat"],
                metric=p["metric"],
                budget=p["budget"],
                severity=p["severity"],
                status="open",
                owner=p["owner"],
                due=p["due"],
                value=p["value"],
                threshold=p["threshold"],
                ci=p["ci"],
                exploitation=p["exploitation"],
                remediation=p["remediation"],
                evidence=p["evidence"],
                opened=event.ts,
                history=[entry],
            )
            continue
        current = state.get(fid)
        if current is None:
            continue
        current.history.append(entry)
        if event.kind in ("finding.observed", "finding.reopened"):
            current.value, current.ci = p["value"], p["ci"]
            current.severity, current.title = p["severity"], p["title"]
            current.evidence = p.get("evidence") or current.evidence
            if event.kind == "finding.reopened":
                current.status, current.due = "reopened", p["due"]
        elif event.kind == "finding.fixed":
            current.status = "fixed"
    return state


def due_date(config: HardenConfig, severity: str, today: date | None = None) -> str:
    days = getattr(config.policy.sla_days, severity)
    return ((today or date.today()) + timedelta(days=days)).isoformat()


def _finding_payload(config: HardenConfig, finding: Finding, run_id: str) -> dict[str, Any]:
    return {**finding.as_dict(), "run_id": run_id, "due": due_date(config, finding.severity)}


def record_scan(
    ledger: Ledger, config: HardenConfig, result: ScanResult, *, actor: str = "hardenml"
) -> list[Event]:
    """Write a completed scan as one atomic group of events: run, measurements, findings."""
    known = findings_state(ledger.events())
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "run.completed",
            {
                "run_id": result.run_id,
                "model": result.model,
                "scan_fingerprint": result.scan_fingerprint,
                "model_sha256": result.model_sha256,
                "data_sha256": result.data_sha256,
                "data_provenance": result.data_provenance,
                "seed": result.seed,
                "n": result.n,
                "started": result.started,
                "finished": result.finished,
                "config": config.model_dump(mode="json"),
                "measurements": [m.as_dict() for m in result.measurements],
                "checks": [c.as_dict() for c in result.checks],
            },
        )
    ]
    seen = set()
    for finding in result.findings:
        seen.add(finding.finding_id)
        payload = _finding_payload(config, finding, result.run_id)
        current = known.get(finding.finding_id)
        if current is None:
            events.append(("finding.opened", payload))
        elif current.is_open:
            events.append(("finding.observed", payload))
        else:
            events.append(("finding.reopened", {**payload, "reason": "seen again by a scan"}))
    evaluated = {
        f"HML-{fingerprint(result.model, c.threat, c.metric, c.budget)[:8]}"
        for c in result.checks
        if c.measurement is not None
    }
    for fid, current in known.items():
        if (
            current.is_open
            and current.model == result.model
            and fid in evaluated
            and fid not in seen
        ):
            value = next(
                c.measurement.value
                for c in result.checks
                if c.measurement is not None
                and f"HML-{fingerprint(result.model, c.threat, c.metric, c.budget)[:8]}" == fid
            )
            events.append(
                (
                    "finding.fixed",
                    {
                        "finding_id": fid,
                        "run_id": result.run_id,
                        "value": value,
                        "model_sha256": result.model_sha256,
                        "reason": f"the check passed in run {result.run_id}",
                    },
                )
            )
    return ledger.append_many(events, actor=actor)


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    model: str
    model_sha256: str
    payload: dict[str, Any]
    seq: int


def latest_run(
    events: list[Event], *, model_sha256: str | None = None, config_fingerprint: str | None = None
) -> RunRecord | None:
    for event in reversed(events):
        if event.kind != "run.completed":
            continue
        p = event.payload
        if model_sha256 is not None and p["model_sha256"] != model_sha256:
            continue
        if config_fingerprint is not None and p.get("scan_fingerprint") != config_fingerprint:
            continue
        return RunRecord(p["run_id"], p["model"], p["model_sha256"], p, event.seq)
    return None
