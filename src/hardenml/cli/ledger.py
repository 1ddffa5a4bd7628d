"""`hardenml ledger verify`: the hash chain, checked."""

from __future__ import annotations

import typer
from rich.markup import escape

from hardenml import workflow
from hardenml.cli._shared import EXIT_TAMPERED, ConfigOpt, console, err, user_errors


def ledger_verify(config: ConfigOpt = None) -> None:
    """Check the hash chain: exit 1 and name each edited, deleted or reordered event."""
    with user_errors():
        ws = workflow.Workspace.open(config)
        report = ws.ledger.verify()
    if report.ok:
        console.print(f"ledger ok: {report.events} events, head {report.head_hash}")
        return
    err.print(
        f"[bold red]ledger TAMPERED[/]: {len(report.problems)} problem(s) in "
        f"{escape(str(ws.ledger.path))}"
    )
    for p in report.problems:
        err.print(f"  - {escape(str(p))}")
    raise typer.Exit(EXIT_TAMPERED)


def register(app: typer.Typer) -> None:
    ledger_app = typer.Typer(no_args_is_help=True, help="Inspect and verify the ledger.")
    ledger_app.command("verify")(ledger_verify)
    app.add_typer(ledger_app, name="ledger")
