"""`hardenml schema`: the JSON Schemas of `hardenml.toml` and `gate-report.json`."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from hardenml.cli._shared import fail, note
from hardenml.report.common import atomic_write
from hardenml.report.schemas import CONFIG_SCHEMA_FILE, GATE_REPORT_SCHEMA_FILE, schema_files


class SchemaName(StrEnum):
    config = "config"
    gate_report = "gate-report"


FILES = {SchemaName.config: CONFIG_SCHEMA_FILE, SchemaName.gate_report: GATE_REPORT_SCHEMA_FILE}


def schema(
    name: Annotated[SchemaName | None, typer.Argument(help="Print this schema on stdout.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write every schema into this folder instead.")
    ] = None,
) -> None:
    """Print a JSON Schema (config: hardenml.toml, gate-report: gate-report.json), or write
    all of them with --out (docs/schemas holds the copies of this version)."""
    files = schema_files()
    if out is not None:
        for filename, text in files.items():
            note(f"wrote {atomic_write(out / filename, text)}")
        return
    if name is None:
        raise fail("name a schema (config or gate-report) or pass --out DIR")
    typer.echo(files[FILES[name]], nl=False)


def register(app: typer.Typer) -> None:
    app.command()(schema)
