"""`hardenml demo`: train real models on real data, scan, patch, validate, gate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hardenml.cli._shared import console, progress_display


def demo(out: Annotated[Path, typer.Option(help="Workspace folder.")] = Path("demo-run")) -> None:
    """Train real models on real data, scan them, record findings and gate the release."""
    from hardenml.demo import run_demo

    raise typer.Exit(run_demo(out, console=console, progress=progress_display))


def register(app: typer.Typer) -> None:
    app.command()(demo)
