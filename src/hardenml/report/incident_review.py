"""A post-incident review written from the ledger: what was detected, decided, patched,
validated and released, in order, with the times between; placeholders only for what
only people can write (the summary in words, the root cause, lessons, action items).

The structure follows the blameless postmortem of Google's SRE book, chapter 15
(https://sre.google/sre-book/postmortem-culture/): summary, impact, timeline, root cause,
what went well and badly, action items.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from importlib.resources import files

from hardenml.ledger import Event
from hardenml.ledger.incidents import IncidentState, incident_timeline, incidents_state
from hardenml.records import INCIDENT_FAMILIES, IncidentFamily

# What only people can write; everything else is read from the ledger.
TO_WRITE = "_To be written by the incident owner: {what}_"
_SECTIONS: dict[str, tuple[str, ...]] = {
    "Detection": ("finding.opened", "finding.reopened", "run.completed"),
    "Decisions": (
        "incident.",
        "finding.assigned",
        "finding.risk_accepted",
        "finding.resolved",
        "finding.review_reopened",
        "finding.escalated",
    ),
    "Patch": ("model.patched",),
    "Validation": ("validation.completed", "finding.fixed"),
    "Release": ("gate.decided", "model.released"),
}


def runbook(family: IncidentFamily) -> str:
    """The runbook shipped for a finding family (templates/runbooks/FAMILY.md)."""
    if family not in INCIDENT_FAMILIES:
        raise ValueError(f"no runbook for {family!r}; families: {list(INCIDENT_FAMILIES)}")
    return files("hardenml").joinpath(f"templates/runbooks/{family}.md").read_text("utf-8")


def describe(event: Event) -> str:
    """One line on what an event says, in the words of its payload."""
    p = event.payload
    kind = event.kind
    if kind.startswith("finding."):
        extra = p.get("reason") or p.get("owner") or p.get("title") or ""
        return f"{p.get('finding_id')}: {extra}".rstrip(": ")
    if kind == "incident.opened":
        return f"{p['incident_id']} opened ({p['family']}, {p['severity']}): {p['title']}"
    if kind == "incident.updated":
        status = f" [status: {p['status']}]" if p.get("status") else ""
        return f"{p['incident_id']}: {p['note']}{status}"
    if kind == "incident.closed":
        return f"{p['incident_id']} closed: {p['resolution']}"
    if kind == "run.completed":
        return f"scan run {p.get('run_id')} of {p.get('model')} ({p.get('n')} samples)"
    if kind == "model.patched":
        return (
            f"patched with {p.get('patch')}: {str(p.get('parent_sha256'))[:12]} -> "
            f"{str(p.get('artifact_sha256'))[:12]}"
        )
    if kind == "validation.completed":
        verdict = "passed" if p.get("passed") else "failed"
        return f"validation {verdict}: candidate {str(p.get('candidate_sha256'))[:12]}"
    if kind == "gate.decided":
        return f"gate {p.get('status')} on run {p.get('run_id')}"
    if kind == "model.released":
        return f"released {p.get('model')} {str(p.get('model_sha256'))[:12]}"
    if p.get("alert_id") is not None:
        return f"alert {p['alert_id']}"
    return kind


def _section(event: Event) -> str:
    for name, kinds in _SECTIONS.items():
        if any(event.kind == k or (k.endswith(".") and event.kind.startswith(k)) for k in kinds):
            return name
    return "Detection" if event.payload.get("alert_id") is not None else "Other"


def _elapsed(start: str, end: str) -> str:
    try:
        seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except ValueError:
        return "-"
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h {rest // 60:02d}m"


def incident_review(events: Sequence[Event], incident_id: str) -> str:
    """The post-incident review of `incident_id` as Markdown (pure: reads the events given)."""
    incident: IncidentState = incidents_state(events)[incident_id]
    timeline = incident_timeline(events, incident_id)
    first = timeline[0]
    lines = [
        f"# Post-incident review: {incident.incident_id}, {incident.title}",
        "",
        f"- Family: {incident.family} (runbook `templates/runbooks/{incident.family}.md`)",
        f"- Severity: {incident.severity}; status: {incident.status}",
        f"- Opened {incident.opened} by {incident.opened_by} (ledger event "
        f"#{incident.opened_seq})"
        + (
            f"; closed {incident.closed} (#{incident.closed_seq}): {incident.resolution}"
            if incident.closed
            else "; still open"
        ),
        f"- Findings: {', '.join(incident.findings) or 'none linked'}; monitor alerts: "
        f"{', '.join(incident.alerts) or 'none linked'}",
        f"- From first evidence to the incident: {_elapsed(first.ts, incident.opened)}"
        + (
            f"; incident open for {_elapsed(incident.opened, incident.closed)}"
            if incident.closed
            else ""
        ),
        "",
        "## Summary",
        "",
        incident.summary or TO_WRITE.format(what="what happened, in two or three sentences"),
        "",
        "## Impact",
        "",
        TO_WRITE.format(what="who was affected, how, for how long"),
        "",
        f"## Timeline (from the ledger: {len(timeline)} linked events, in chain order)",
        "",
        "| # | time | stage | event | by | what |",
        "|---|---|---|---|---|---|",
    ]
    for event in timeline:
        what = describe(event).replace("|", "\\|")
        lines.append(
            f"| {event.seq} | {event.ts} | {_section(event)} | `{event.kind}` | "
            f"{event.actor} | {what} |"
        )
    lines.append("")
    for name in _SECTIONS:
        lines += [f"## {name}", ""]
        chosen = [e for e in timeline if _section(e) == name]
        if not chosen:
            lines.append(f"Nothing in the ledger for this stage (no {name.lower()} event linked).")
        lines += [f"- #{e.seq} {e.ts}: {describe(e)}" for e in chosen]
        lines.append("")
    lines += [
        "## Root cause",
        "",
        TO_WRITE.format(what="why it happened, beyond the trigger (five whys)"),
        "",
        "## What went well, what went badly, where we were lucky",
        "",
        TO_WRITE.format(what="the team's view, blameless"),
        "",
        "## Action items",
        "",
        TO_WRITE.format(what="each with an owner and a due date; track them as findings"),
        "",
    ]
    return "\n".join(lines)
