"""`hardenml findings assign | accept-risk | resolve | reopen | overdue`: the review trail."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from hardenml import workflow
from hardenml.cli import ConfigOpt, _user_errors, console, err, findings_app
from hardenml.gate import EXIT_FAIL, EXIT_USAGE
from hardenml.ledger import ReviewError, escalate_overdue, overdue_findings, review

ByOpt = Annotated[str, typer.Option("--by", help="Who decides (recorded as the event's actor).")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why: recorded in the ledger.")]


def _review(
    config: Path | None, finding_id: str, action: str, by: str, reason: str, **extra: object
) -> None:
    with _user_errors():
        ws = workflow.Workspace.open(config)
        try:
            event = review(ws.ledger, ws.config, finding_id, action, by=by, reason=reason, **extra)  # type: ignore[arg-type]
        except ReviewError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}")
            raise typer.Exit(EXIT_USAGE) from None
    console.print(
        f"{escape(finding_id)}: {escape(event.kind)} recorded as ledger event "
        f"#{event.seq} by {escape(by)}"
    )


@findings_app.command("assign")
def assign(
    finding_id: str,
    to: Annotated[str, typer.Option("--to", help="New owner.")],
    by: ByOpt,
    reason: ReasonOpt,
    config: ConfigOpt = None,
) -> None:
    """Hand a finding to a new owner."""
    _review(config, finding_id, "assign", by, reason, owner=to)


@findings_app.command("accept-risk")
def accept_risk(
    finding_id: str,
    until: Annotated[str, typer.Option("--until", help="YYYY-MM-DD: the acceptance expires.")],
    by: ByOpt,
    reason: ReasonOpt,
    config: ConfigOpt = None,
) -> None:
    """Accept a finding's risk until a date; it stops blocking the gate until then."""
    try:
        expiry = date.fromisoformat(until)
    except ValueError:
        err.print(f"[bold red]error:[/] --until {escape(until)}: expected a date YYYY-MM-DD")
        raise typer.Exit(EXIT_USAGE) from None
    _review(config, finding_id, "accept-risk", by, reason, until=expiry)


@findings_app.command("resolve")
def resolve(finding_id: str, by: ByOpt, reason: ReasonOpt, config: ConfigOpt = None) -> None:
    """Close a finding by hand (a scan that sees it again reopens it)."""
    _review(config, finding_id, "resolve", by, reason)


@findings_app.command("reopen")
def reopen(finding_id: str, by: ByOpt, reason: ReasonOpt, config: ConfigOpt = None) -> None:
    """Reopen a fixed, resolved or accepted finding, with a new due date."""
    _review(config, finding_id, "reopen", by, reason)


@findings_app.command("overdue")
def overdue(
    config: ConfigOpt = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Judge as of YYYY-MM-DD.")] = None,
) -> None:
    """List open findings past their due date and escalate them; exit 1 when there are any.

    With --as-of it only previews: nothing is escalated or recorded."""
    with _user_errors():
        ws = workflow.Workspace.open(config)
        try:
            today = date.fromisoformat(as_of) if as_of else date.today()
        except ValueError:
            err.print(f"[bold red]error:[/] --as-of {escape(as_of or '')}: expected YYYY-MM-DD")
            raise typer.Exit(EXIT_USAGE) from None
        if as_of:
            late = overdue_findings(ws.ledger.events(), today=today)
        else:
            late = escalate_overdue(ws.ledger, ws.config, today=today)
    if not late:
        console.print(f"no overdue findings as of {today.isoformat()}")
        return
    to = escape(ws.config.policy.escalate_to)
    table = Table(
        title=f"overdue findings as of {today.isoformat()}: "
        + (f"preview, would escalate to {to} (nothing recorded)" if as_of else f"escalated to {to}")
    )
    table.add_column("id", no_wrap=True)
    for col in ("severity", "owner", "due", "days overdue", "title"):
        table.add_column(col)
    for f in late:
        table.add_row(
            f.finding_id,
            f.severity,
            escape(f.owner),
            f.due,
            str(f.days_overdue(today)),
            escape(f.title),
        )
    console.print(table)
    raise typer.Exit(EXIT_FAIL)
