"""`hardenml incident open | update | close | show | list | review | runbook`: incidents
linked to findings and monitor alerts, each step a ledger event."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from hardenml import workflow
from hardenml.cli._shared import ConfigOpt, console, fail, note, user_errors
from hardenml.ledger import Event
from hardenml.ledger.incidents import (
    close_incident,
    incidents_state,
    open_incident,
    update_incident,
)
from hardenml.records import INCIDENT_FAMILIES, SEVERITIES
from hardenml.report.incident_review import incident_review, runbook

ByOpt = Annotated[str, typer.Option("--by", help="Who acts (recorded as the event's actor).")]
FindingOpt = Annotated[
    list[str] | None, typer.Option("--finding", "-f", help="A linked finding id (repeatable).")
]
AlertOpt = Annotated[
    list[str] | None, typer.Option("--alert", "-a", help="A linked monitor alert id (repeatable).")
]
NotifyOpt = Annotated[
    str | None,
    typer.Option(
        "--notify", help="Webhook to POST the event to (default: $HARDENML_INCIDENT_WEBHOOK)."
    ),
]


# The incident webhook when --notify is not given; its URL may itself be the secret (chat
# webhooks), and the sink's messages show only its scheme, host and port.
WEBHOOK_ENV = "HARDENML_INCIDENT_WEBHOOK"


def _notify(url: str | None, event: Event) -> None:
    """POST the event through the monitor's webhook sink (retries with backoff); a failure
    is reported, never undoes the recorded event."""
    from hardenml.monitor.readings import MonitorError
    from hardenml.monitor.sinks import WebhookSink

    target = url or os.environ.get(WEBHOOK_ENV, "").strip() or None
    if target is None:
        return
    payload = {"kind": event.kind, "seq": event.seq, "ts": event.ts, "actor": event.actor}
    try:
        WebhookSink(target, retries=2).send({**payload, **event.payload})
    except MonitorError as exc:
        note(f"warning: not notified ({exc}); the event is recorded in the ledger")
        return
    console.print("notified the incident webhook")


def _choice(value: str, allowed: tuple[str, ...], option: str) -> str:
    if value not in allowed:
        raise fail(f"{option} {value!r} is not one of {list(allowed)}")
    return value


def incident_open(
    title: Annotated[str, typer.Option("--title", help="One line on what is happening.")],
    family: Annotated[str, typer.Option("--family", help=f"One of {list(INCIDENT_FAMILIES)}.")],
    by: ByOpt,
    severity: Annotated[str, typer.Option("--severity")] = "high",
    finding: FindingOpt = None,
    alert: AlertOpt = None,
    summary: Annotated[str, typer.Option("--summary", help="What is known so far.")] = "",
    notify: NotifyOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Open an incident linked to findings and monitor alerts; prints its runbook's path."""
    chosen = _choice(family, INCIDENT_FAMILIES, "--family")
    level = _choice(severity, SEVERITIES, "--severity")
    with user_errors():
        ws = workflow.Workspace.open(config)
        ws.ledger.check_writable()
        event = open_incident(
            ws.ledger,
            title=title,
            family=chosen,  # type: ignore[arg-type]
            severity=level,  # type: ignore[arg-type]
            findings=finding or [],
            alerts=alert or [],
            summary=summary,
            actor=by,
        )
    incident_id = event.payload["incident_id"]
    console.print(f"opened {incident_id} (ledger event #{event.seq}): {escape(title)}")
    console.print(f"runbook: `hardenml incident runbook {chosen}`")
    _notify(notify, event)


def incident_update(
    incident_id: str,
    note_: Annotated[str, typer.Option("--note", help="What was found or decided.")],
    by: ByOpt,
    finding: FindingOpt = None,
    alert: AlertOpt = None,
    status: Annotated[
        str | None, typer.Option("--status", help="investigating, mitigated or monitoring.")
    ] = None,
    notify: NotifyOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Add a note, links or a status change to an open incident."""
    if status is not None:
        _choice(status, ("investigating", "mitigated", "monitoring"), "--status")
    with user_errors():
        ws = workflow.Workspace.open(config)
        event = update_incident(
            ws.ledger,
            incident_id,
            note=note_,
            findings=finding or [],
            alerts=alert or [],
            status=status,  # type: ignore[arg-type]
            actor=by,
        )
    console.print(f"updated {incident_id} (ledger event #{event.seq})")
    _notify(notify, event)


def incident_close(
    incident_id: str,
    resolution: Annotated[str, typer.Option("--resolution", help="How it ended.")],
    by: ByOpt,
    notify: NotifyOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Close an incident; `hardenml incident review ID` then writes its review."""
    with user_errors():
        ws = workflow.Workspace.open(config)
        event = close_incident(ws.ledger, incident_id, resolution=resolution, actor=by)
    console.print(f"closed {incident_id} (ledger event #{event.seq})")
    _notify(notify, event)


def incident_show(incident_id: str, config: ConfigOpt = None) -> None:
    """One incident's state as JSON: links, status, notes."""
    with user_errors():
        ws = workflow.Workspace.open(config)
        state = incidents_state(ws.ledger.events())
    if incident_id not in state:
        raise fail(f"no incident {incident_id!r} (incidents: {', '.join(sorted(state)) or 'none'})")
    typer.echo(json.dumps(state[incident_id].as_dict(), indent=2))


def incident_list(config: ConfigOpt = None) -> None:
    """Every incident, newest last."""
    with user_errors():
        ws = workflow.Workspace.open(config)
        state = incidents_state(ws.ledger.events())
    if not state:
        console.print("no incidents")
    for incident in state.values():
        console.print(
            f"{incident.incident_id} [{incident.severity}, {incident.status}] "
            f"{escape(incident.title)} ({incident.family})"
        )


def incident_review_command(
    incident_id: str,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here (default: stdout).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """The post-incident review from the ledger's timeline, as Markdown."""
    with user_errors():
        ws = workflow.Workspace.open(config)
        events = ws.ledger.events()
    if incident_id not in incidents_state(events):
        raise fail(f"no incident {incident_id!r}; see `hardenml incident list`")
    text = incident_review(events, incident_id)
    if output is None:
        typer.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    console.print(f"review of {incident_id} -> {output}")


def incident_runbook(family: str) -> None:
    """Print the runbook for a finding family."""
    chosen = _choice(family, INCIDENT_FAMILIES, "FAMILY")
    typer.echo(runbook(chosen), nl=False)  # type: ignore[arg-type]


def register(app: typer.Typer) -> None:
    incident_app = typer.Typer(no_args_is_help=True, help="Incidents, runbooks and reviews.")
    incident_app.command("open")(incident_open)
    incident_app.command("update")(incident_update)
    incident_app.command("close")(incident_close)
    incident_app.command("show")(incident_show)
    incident_app.command("list")(incident_list)
    incident_app.command("review")(incident_review_command)
    incident_app.command("runbook")(incident_runbook)
    app.add_typer(incident_app, name="incident")
