"""`hardenml schema`: the JSON Schemas of `hardenml.toml`, `gate-report.json` and prompt
submissions."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from hardenml.cli._shared import fail, note
from hardenml.report.common import atomic_write
from hardenml.report.schemas import (
    CONFIG_SCHEMA_FILE,
    GATE_REPORT_SCHEMA_FILE,
    PROMPT_SUBMISSION_SCHEMA_FILE,
    schema_files,
)


class SchemaName(StrEnum):
    config = "config"
    gate_report = "gate-report"
    prompt_submission = "prompt-submission"


FILES = {
    SchemaName.config: CONFIG_SCHEMA_FILE,
    SchemaName.gate_report: GATE_REPORT_SCHEMA_FILE,
    SchemaName.prompt_submission: PROMPT_SUBMISSION_SCHEMA_FILE,
}


def schema(
    name: Annotated[SchemaName | None, typer.Argument(help="Print this schema on stdout.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write every schema into this folder instead.")
    ] = None,
) -> None:
    """Print a JSON Schema (config: hardenml.toml, gate-report: gate-report.json,
    prompt-submission: a chat model's `hardenml intake` file), or write all of them with
    --out (docs/schemas holds the copies of this version)."""
    files = schema_files()
    if out is not None:
        for filename, text in files.items():
            note(f"wrote {atomic_write(out / filename, text)}")
        return
    if name is None:
        raise fail("name a schema (config, gate-report or prompt-submission) or pass --out DIR")
    typer.echo(files[FILES[name]], nl=False)


def register(app: typer.Typer) -> None:
    app.command()(schema)
