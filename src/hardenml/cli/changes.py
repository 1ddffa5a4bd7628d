"""`hardenml changes --since REF`: what changed since a release, in Markdown."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from hardenml import workflow
from hardenml.cli._shared import ConfigOpt, console, fail, user_errors
from hardenml.continuous.changes import ChangesError, changes_since


def changes(
    since: Annotated[
        str,
        typer.Option(
            "--since", help="A release: its ledger seq, a model sha256 prefix, or YYYY-MM-DD."
        ),
    ],
    out: Annotated[Path | None, typer.Option(help="Write the Markdown here.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Findings opened and fixed, robustness before and after, and patches since a release,
    every line citing its ledger events. Reads the ledger; writes nothing to it."""
    with user_errors():
        ws = workflow.Workspace.open(config)
        try:
            text = changes_since(ws.ledger.events(), ws.config.model.name, since)
        except ChangesError as exc:
            raise fail(str(exc)) from None
    if out is None:
        sys.stdout.write(text)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot write {out}: {exc.strerror}") from None
    console.print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.command()(changes)
