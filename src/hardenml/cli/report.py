"""`hardenml report compliance`: the regulatory requirements of the threat model with the
checks, findings and evidence behind each. Read-only: it writes to stdout or --output."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hardenml import workflow
from hardenml.cli._shared import ConfigOpt, console, fail, user_errors
from hardenml.report.compliance import compliance_json, compliance_markdown, compliance_report


def report_compliance(
    config: ConfigOpt = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the report here (default: stdout)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of Markdown.")] = False,
) -> None:
    """Each requirement of `[[requirements]]` with its checks, findings and ledger evidence;
    "no evidence" where the ledger holds none."""
    with user_errors():
        ws = workflow.Workspace.open(config)
        events, head = ws.ledger.verified()
        report = compliance_report(ws.config, events, head.hash)
    text = compliance_json(report) if as_json else compliance_markdown(report)
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot write {output}: {exc.strerror}") from None
    console.print(f"compliance report: {len(report.requirements)} requirement(s) -> {output}")


def register(app: typer.Typer) -> None:
    report_app = typer.Typer(no_args_is_help=True, help="Reports read from the ledger.")
    report_app.command("compliance")(report_compliance)
    app.add_typer(report_app, name="report")
