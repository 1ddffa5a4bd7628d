"""Findings and runs as derived state: a fold over the ledger's events.

Nothing here is stored besides events. A scan's findings are reconciled with what the
ledger already knows: a new vulnerability is opened, a known one observed again, a
fixed one that comes back is reopened, and an open one the scan no longer sees (for a
check it did evaluate) is marked fixed, with the run as evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any

from hardenml.config import HardenConfig
from hardenml.ledger.store import Event, Ledger
from hardenml.records import RUN_COMPLETED, SEVERITIES, Finding, RunCompleted
from hardenml.scan import ScanResult

OPEN_STATES = ("open", "reopened")
REVIEW_ACTIONS = ("assign", "accept-risk", "resolve", "reopen")
# Which statuses each review action may start from.
_ALLOWED_FROM = {
    "assign": ("open", "reopened", "accepted"),
    "accept-risk": ("open", "reopened"),
    "resolve": ("open", "reopened", "accepted"),
    "reopen": ("fixed", "resolved", "accepted"),
}


_HISTORY_KEYS = (
    "run_id", "value", "threshold", "severity", "reason", "by", "owner", "until", "due", "to",
)  # fmt: skip


class ReviewError(ValueError):
    """A review that the finding's current state does not allow; the message says why."""


@dataclass(frozen=True, kw_only=True)
class FindingState(Finding):
    """A finding as the ledger knows it now: the scan's record as last observed, plus its
    lifecycle (status, due date, reviews), folded from `finding.*` events."""

    status: str
    due: str
    opened: str
    history: list[dict[str, Any]] = field(default_factory=list)
    accepted_until: str | None = None
    escalated_for_due: str | None = None
    # Who reported it from outside (`hardenml intake`): submitter, contact, submission id.
    credit: dict[str, Any] | None = None

    def status_on(self, today: date | None = None) -> str:
        """The status as of `today`: an accepted risk whose date has passed is open again."""
        expired = self.accepted_until is not None and (
            (today or date.today()).isoformat() > self.accepted_until
        )
        return "open" if self.status == "accepted" and expired else self.status

    @property
    def is_open(self) -> bool:
        return self.status_on() in OPEN_STATES

    def days_overdue(self, today: date | None = None) -> int:
        if self.status_on(today) not in OPEN_STATES:
            return 0
        return max(0, ((today or date.today()) - date.fromisoformat(self.due)).days)

    def as_dict(self) -> dict[str, Any]:
        data = super().as_dict()
        data["status"] = self.status_on()  # an expired acceptance reads as open
        return data


# The events a scan writes about its findings; the others are people's reviews.
SCAN_FINDING_EVENTS = ("finding.opened", "finding.observed", "finding.reopened", "finding.fixed")


def findings_state(events: list[Event], *, as_of_run: str | None = None) -> dict[str, FindingState]:
    """Current findings by id, folded from `finding.*` events in chain order.

    With `as_of_run`, the findings as that run's scan left them, with every review since:
    what later scans (of this model file or another of the same name) opened, observed or
    fixed is left out, so that a gate on the run, and the reports beside it, show one
    run's numbers and not a mix.
    """
    after: int | None = None
    if as_of_run is not None:
        after = next(
            (
                e.seq
                for e in events
                if e.kind == RUN_COMPLETED and e.payload.get("run_id") == as_of_run
            ),
            None,
        )
    state: dict[str, FindingState] = {}
    for event in events:
        if not event.kind.startswith("finding."):
            continue
        p = event.payload
        if (
            after is not None
            and event.seq > after
            and event.kind in SCAN_FINDING_EVENTS
            and p.get("run_id") != as_of_run
        ):
            continue
        fid = p["finding_id"]
        entry: dict[str, Any] = {  # one line of the finding's history
            "seq": event.seq,
            "ts": event.ts,
            "kind": event.kind,
            "actor": event.actor,
            **{k: p[k] for k in _HISTORY_KEYS if k in p},
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
                value=p["value"],
                threshold=p["threshold"],
                ci=tuple(p["ci"]),
                n=p["n"],
                owner=p["owner"],
                exploitation=p["exploitation"],
                remediation=p["remediation"],
                evidence=p["evidence"],
                slice=p.get("slice"),
                status="open",
                due=p["due"],
                opened=event.ts,
                history=[entry],
                taxonomy=dict(p.get("taxonomy") or {}),
                credit=p.get("credit"),
            )
            continue
        current = state.get(fid)
        if current is None:
            continue
        current.history.append(entry)
        if event.kind in ("finding.observed", "finding.reopened"):
            # Everything the scan measured and judged takes this run's value, the threshold
            # too: the policy may have changed since the finding was opened, and a title
            # saying "below the policy's 90%" beside a threshold of 0.8 is a stale record.
            current = replace(
                current,
                value=p["value"],
                ci=tuple(p["ci"]),
                n=p.get("n", current.n),
                threshold=p["threshold"],
                severity=p["severity"],
                title=p["title"],
                exploitation=p["exploitation"],
                remediation=p["remediation"],
                evidence=p.get("evidence") or current.evidence,
                taxonomy=dict(p.get("taxonomy") or current.taxonomy),
            )
            if event.kind == "finding.reopened":
                current = replace(current, status="reopened", due=p["due"])
        elif event.kind == "finding.fixed":
            current = replace(current, status="fixed")
        elif event.kind == "finding.assigned":
            current = replace(current, owner=p["owner"])
        elif event.kind == "finding.risk_accepted":
            current = replace(current, status="accepted", accepted_until=p["until"])
        elif event.kind == "finding.resolved":
            current = replace(current, status="resolved")
        elif event.kind == "finding.review_reopened":
            current = replace(current, status="reopened", due=p["due"], accepted_until=None)
        elif event.kind == "finding.escalated":
            current = replace(current, escalated_for_due=p["due"])
        state[fid] = current
    return state


def due_date(config: HardenConfig, severity: str, today: date | None = None) -> str:
    days = getattr(config.policy.sla_days, severity)
    return ((today or date.today()) + timedelta(days=days)).isoformat()


def _finding_payload(config: HardenConfig, finding: Finding, run_id: str) -> dict[str, Any]:
    return {**finding.as_dict(), "run_id": run_id, "due": due_date(config, finding.severity)}


def record_scan(
    ledger: Ledger, config: HardenConfig, result: ScanResult, *, actor: str = "hardenml"
) -> list[Event]:
    """Write a completed scan as one atomic group of events: run, measurements, findings.

    The reconciliation with known findings happens under the ledger's write lock, so two
    scans recording at once still open each finding once.
    """
    return ledger.append_derived(lambda current: _scan_events(config, result, current), actor=actor)


def _scan_events(
    config: HardenConfig, result: ScanResult, current_events: list[Event]
) -> list[tuple[str, dict[str, Any]]]:
    known = findings_state(current_events)
    events: list[tuple[str, dict[str, Any]]] = [
        (
            RUN_COMPLETED,
            RunCompleted(
                run_id=result.run_id,
                model=result.model,
                model_sha256=result.model_sha256,
                data_sha256=result.data_sha256,
                seed=result.seed,
                n=result.n,
                measurements=list(result.measurements),
                scan=result.scan_summary(),
                extra={
                    "scan_fingerprint": result.scan_fingerprint,
                    "data_provenance": result.data_provenance,
                    "started": result.started,
                    "finished": result.finished,
                    "config": config.model_dump(mode="json"),
                    "checks": [c.as_dict() for c in result.checks],
                    "stochastic": result.stochastic.as_dict() if result.stochastic else None,
                    **result.analysis,
                },
            ).to_payload(),
        )
    ]
    seen = set()
    for finding in result.findings:
        seen.add(finding.finding_id)
        payload = _finding_payload(config, finding, result.run_id)
        current = known.get(finding.finding_id)
        if current is None:
            events.append(("finding.opened", payload))
        elif current.is_open or current.status_on() == "accepted":
            events.append(("finding.observed", payload))
        else:
            events.append(("finding.reopened", {**payload, "reason": "seen again by a scan"}))
    # An open (or accepted) finding whose check this scan evaluated and passed is fixed.
    passed_values = result.passed_ids
    for fid, current in known.items():
        still_tracked = current.is_open or current.status_on() == "accepted"
        if still_tracked and current.model == result.model and fid in passed_values:
            events.append(
                (
                    "finding.fixed",
                    {
                        "finding_id": fid,
                        "run_id": result.run_id,
                        "value": passed_values[fid],
                        "model_sha256": result.model_sha256,
                        "reason": f"the check passed in run {result.run_id}",
                    },
                )
            )
    return events


@dataclass(frozen=True)
class RunRecord:
    """A `run.completed` event: its ids, its raw payload and its ledger position."""

    run_id: str
    model: str
    model_sha256: str
    payload: dict[str, Any]
    seq: int

    @property
    def completed(self) -> RunCompleted:
        """The payload as its typed record."""
        return RunCompleted.from_payload(
            {"run_id": self.run_id, "model": self.model, "model_sha256": self.model_sha256}
            | self.payload
        )


def latest_run(
    events: list[Event], *, model_sha256: str | None = None, config_fingerprint: str | None = None
) -> RunRecord | None:
    for event in reversed(events):
        if event.kind != RUN_COMPLETED:
            continue
        p = event.payload
        if model_sha256 is not None and p["model_sha256"] != model_sha256:
            continue
        if config_fingerprint is not None and p.get("scan_fingerprint") != config_fingerprint:
            continue
        return RunRecord(p["run_id"], p["model"], p["model_sha256"], p, event.seq)
    return None


def review(
    ledger: Ledger,
    config: HardenConfig,
    finding_id: str,
    action: str,
    *,
    by: str,
    reason: str,
    owner: str | None = None,
    until: date | None = None,
    today: date | None = None,
) -> Event:
    """Record a human decision on a finding as a ledger event, if its state allows it."""
    today = today or date.today()
    state = findings_state(ledger.events())
    finding = state.get(finding_id)
    if finding is None:
        raise ReviewError(f"no finding {finding_id}; see `hardenml findings list --all`")
    if not by.strip() or not reason.strip():
        raise ReviewError("a review needs --by NAME and --reason TEXT")
    status = finding.status_on(today)
    if action not in _ALLOWED_FROM:
        raise ReviewError(f"unknown review action {action!r}; one of {list(REVIEW_ACTIONS)}")
    if status not in _ALLOWED_FROM[action]:
        raise ReviewError(
            f"{finding_id} is {status}; {action} applies to findings that are "
            f"{' or '.join(_ALLOWED_FROM[action])}"
        )
    base = {"finding_id": finding_id, "by": by, "reason": reason}
    if action == "assign":
        if not owner:
            raise ReviewError("assign needs --to OWNER")
        return ledger.append("finding.assigned", {**base, "owner": owner}, actor=by)
    if action == "accept-risk":
        if until is None or until <= today:
            raise ReviewError("accept-risk needs --until DATE in the future: accepted risk expires")
        return ledger.append(
            "finding.risk_accepted", {**base, "until": until.isoformat()}, actor=by
        )
    if action == "resolve":
        return ledger.append("finding.resolved", base, actor=by)
    due = due_date(config, finding.severity, today)
    return ledger.append("finding.review_reopened", {**base, "due": due}, actor=by)


def overdue_findings(events: list[Event], *, today: date | None = None) -> list[FindingState]:
    """Open findings past their due date as of `today`, most overdue first. A query: it
    writes nothing, so any date may be asked about (`findings overdue --as-of`)."""
    today = today or date.today()
    return sorted(
        (f for f in findings_state(events).values() if f.days_overdue(today) > 0),
        key=lambda f: (-f.days_overdue(today), f.finding_id),
    )


def escalate_overdue(
    ledger: Ledger, config: HardenConfig, *, today: date | None = None
) -> list[FindingState]:
    """Open findings past their due date, most overdue first; each is escalated once per
    due date with a `finding.escalated` event naming whom it went to.

    `today` is the clock the escalation is recorded under (default: the real date); to
    ask what would be overdue on another date without recording anything, use
    `overdue_findings`.
    """
    today = today or date.today()
    late = overdue_findings(ledger.events(), today=today)
    fresh = [f for f in late if f.escalated_for_due != f.due]
    if fresh:
        ledger.append_many(
            [
                (
                    "finding.escalated",
                    {
                        "finding_id": f.finding_id,
                        "to": config.policy.escalate_to,
                        "due": f.due,
                        "days_overdue": f.days_overdue(today),
                        "owner": f.owner,
                        "reason": f"{f.severity} finding past its due date {f.due}",
                    },
                )
                for f in fresh
            ]
        )
    return late


def sorted_findings(
    state: dict[str, FindingState], *, include_closed: bool = False
) -> list[FindingState]:
    """Findings most severe first (then by id); open ones only unless `include_closed`."""
    return sorted(
        (f for f in state.values() if include_closed or f.is_open),
        key=lambda f: (
            SEVERITIES.index(f.severity) if f.severity in SEVERITIES else len(SEVERITIES),
            f.finding_id,
        ),
    )


def resolve_finding(state: dict[str, FindingState], text: str) -> FindingState:
    """The finding a user means by `text`: its id (`HML-1a2b3c4d`) or a prefix of its
    fingerprint. `ReviewError` when none or more than one matches."""
    prefix = text.strip().removeprefix("HML-").lower()
    if not prefix:
        raise ReviewError("give a finding id (HML-...); see `hardenml findings list --all`")
    matches = [
        f for f in state.values() if f.finding_id == text or f.fingerprint.startswith(prefix)
    ]
    if not matches:
        raise ReviewError(f"no finding {text}; see `hardenml findings list --all`")
    if len(matches) > 1:
        ids = ", ".join(sorted(f.finding_id for f in matches))
        raise ReviewError(f"{text} matches {len(matches)} findings ({ids}); give more of the id")
    return matches[0]
