"""`hardenml demo`: train real models on real data, scan, patch, validate, gate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hardenml.cli._shared import console, progress_display


def demo(
    out: Annotated[Path, typer.Option(help="Workspace folder.")] = Path("demo-run"),
    text: Annotated[
        bool,
        typer.Option(
            "--text",
            help="The text demo instead: TF-IDF on Rotten Tomatoes snippets, scanned with "
            "character edits, TextFooler and CheckList suites (needs the text extra).",
        ),
    ] = False,
) -> None:
    """Train real models on real data, scan them, record findings and gate the release."""
    if text:
        from hardenml.demo_text import run_text_demo

        raise typer.Exit(run_text_demo(out, console=console, progress=progress_display))
    from hardenml.demo import run_demo

    raise typer.Exit(run_demo(out, console=console, progress=progress_display))


def register(app: typer.Typer) -> None:
    app.command()(demo)
