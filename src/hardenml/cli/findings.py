"""`hardenml findings list | show | assign | accept-risk | resolve | reopen | overdue`."""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from hardenml import workflow
from hardenml.cli._shared import (
    EXIT_FAIL,
    EXIT_USAGE,
    ConfigOpt,
    console,
    err,
    fail,
    user_errors,
)
from hardenml.ledger import (
    ReviewError,
    escalate_overdue,
    findings_state,
    overdue_findings,
    resolve_finding,
    review,
    sorted_findings,
)


def print_findings(rows: list[dict[str, object]], *, title: str) -> None:
    table = Table(title=title)
    table.add_column("id", no_wrap=True)
    for col in ("severity", "status", "owner", "due", "title"):
        table.add_column(col)
    for f in rows:
        table.add_row(
            *(
                escape(str(f.get(k, "-")))
                for k in ("finding_id", "severity", "status", "owner", "due", "title")
            )
        )
    console.print(table)


def findings_list(
    config: ConfigOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Include fixed findings.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Open findings (with --all, every finding), most severe first."""
    with user_errors():
        ws = workflow.Workspace.open(config)
        state = findings_state(ws.ledger.events())
    rows = sorted_findings(state, include_closed=all_)
    if as_json:
        sys.stdout.write(json.dumps([f.as_dict() for f in rows], indent=2) + "\n")
        return
    if not rows:
        console.print("no open findings" if not all_ else "no findings")
        return
    print_findings([f.as_dict() for f in rows], title="findings")


def findings_show(
    finding_id: str,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """One finding in full: evidence, exploitation path, remediation, history."""
    with user_errors():
        ws = workflow.Workspace.open(config)
        state = findings_state(ws.ledger.events())
        try:
            f = resolve_finding(state, finding_id)
        except ReviewError as exc:
            raise fail(str(exc)) from None
    if as_json:
        sys.stdout.write(json.dumps(f.as_dict(), indent=2) + "\n")
        return
    console.print(f"[bold]{f.finding_id}[/] [{f.severity}] {escape(f.title)}")
    for label, value in (
        ("status", f.status),
        ("owner", f.owner),
        ("due", f.due),
        ("model", f.model),
        ("threat", f.threat),
        ("budget", f.budget),
        ("value", f"{f.value:.3f} (CI {f.ci[0]:.3f}-{f.ci[1]:.3f})"),
        ("threshold", f.threshold),
        ("fingerprint", f.fingerprint),
        ("ATLAS", ", ".join(f.taxonomy.get("atlas") or []) or "-"),
        ("OWASP ML", ", ".join(f.taxonomy.get("owasp_ml") or []) or "-"),
        ("exploitation", f.exploitation),
        ("remediation", f.remediation),
    ):
        console.print(f"  {label:<13}{escape(str(value))}")
    for ev in f.evidence:
        console.print(
            f"  evidence     {escape(str(ev.get('path')))} ({ev.get('count')} examples, "
            f"sha256 {str(ev.get('sha256'))[:12]})"
        )
    console.print("  history:")
    for h in f.history:
        console.print(
            f"    #{h['seq']} {h['ts']} {escape(str(h['kind']))}"
            + (f" run {h['run_id']}" if "run_id" in h else "")
        )


ByOpt = Annotated[str, typer.Option("--by", help="Who decides (recorded as the event's actor).")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why: recorded in the ledger.")]


def _review(
    config: Path | None, finding_id: str, action: str, by: str, reason: str, **extra: object
) -> None:
    with user_errors():
        ws = workflow.Workspace.open(config)
        try:
            fid = resolve_finding(findings_state(ws.ledger.events()), finding_id).finding_id
            event = review(ws.ledger, ws.config, fid, action, by=by, reason=reason, **extra)  # type: ignore[arg-type]
        except ReviewError as exc:
            raise fail(str(exc)) from None
    console.print(
        f"{escape(finding_id)}: {escape(event.kind)} recorded as ledger event "
        f"#{event.seq} by {escape(by)}"
    )


def assign(
    finding_id: str,
    to: Annotated[str, typer.Option("--to", help="New owner.")],
    by: ByOpt,
    reason: ReasonOpt,
    config: ConfigOpt = None,
) -> None:
    """Hand a finding to a new owner."""
    _review(config, finding_id, "assign", by, reason, owner=to)


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


def resolve(finding_id: str, by: ByOpt, reason: ReasonOpt, config: ConfigOpt = None) -> None:
    """Close a finding by hand (a scan that sees it again reopens it)."""
    _review(config, finding_id, "resolve", by, reason)


def reopen(finding_id: str, by: ByOpt, reason: ReasonOpt, config: ConfigOpt = None) -> None:
    """Reopen a fixed, resolved or accepted finding, with a new due date."""
    _review(config, finding_id, "reopen", by, reason)


def overdue(
    config: ConfigOpt = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Judge as of YYYY-MM-DD.")] = None,
) -> None:
    """List open findings past their due date and escalate them; exit 1 when there are any.

    With --as-of it only previews: nothing is escalated or recorded."""
    with user_errors():
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


def register(app: typer.Typer) -> None:
    findings_app = typer.Typer(no_args_is_help=True, help="List, inspect and review findings.")
    findings_app.command("list")(findings_list)
    findings_app.command("show")(findings_show)
    findings_app.command("assign")(assign)
    findings_app.command("accept-risk")(accept_risk)
    findings_app.command("resolve")(resolve)
    findings_app.command("reopen")(reopen)
    findings_app.command("overdue")(overdue)
    app.add_typer(findings_app, name="findings")
