"""The `hardenml` command: parses arguments, calls the library, prints. Nothing more.

Each module registers its commands explicitly in `build_app`; none is registered by
importing it. `main` maps an unexpected exception to exit code 3 with a one-line message
(the traceback with `--debug`, `HARDENML_DEBUG=1`, or in the log file it names).
"""

from __future__ import annotations

import inspect
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from hardenml._version import __version__
from hardenml.cli import (
    changes,
    chat,
    core,
    demo,
    findings,
    incident,
    intake,
    ledger,
    monitor,
    patching,
    redteam,
    replay,
    report,
    retrain,
    schema,
)
from hardenml.cli._shared import EXIT_INTERNAL, err

__all__ = ["app", "build_app", "main"]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hardenml {__version__}")
        raise typer.Exit(0)


def _reflowed(doc: str) -> str:
    """A docstring with each prose paragraph on one line.

    Typer's rich help keeps a docstring's hard line breaks, so a command whose summary
    wraps in the source printed a ragged first line in `hardenml --help`. Lists and
    indented blocks keep their lines.
    """
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    reflowed = []
    for paragraph in paragraphs:
        lines = paragraph.splitlines()
        is_prose = all(
            line and not line[0].isspace() and not line.startswith(("- ", "* ", "|"))
            for line in lines
        )
        reflowed.append(" ".join(line.strip() for line in lines) if is_prose else paragraph)
    return "\n\n".join(reflowed)


def _reflow_help(app: typer.Typer) -> None:
    for command in app.registered_commands:
        doc = command.help or (command.callback.__doc__ if command.callback else None)
        if doc:
            command.help = _reflowed(doc)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            _reflow_help(group.typer_instance)


def build_app() -> typer.Typer:
    """The command tree: every command module's `register`, in the order help lists them."""
    app = typer.Typer(
        add_completion=False, no_args_is_help=True, help="Harden ML models before they ship."
    )

    @app.callback()
    def _root(
        version: Annotated[
            bool,
            typer.Option(
                "--version", callback=_version, is_eager=True, help="Print the version and exit."
            ),
        ] = False,
        debug: Annotated[
            bool, typer.Option("--debug", help="Print the traceback of an internal error.")
        ] = False,
    ) -> None:
        """Harden ML models before they ship."""
        if debug:
            os.environ["HARDENML_DEBUG"] = "1"

    for module in (
        core, findings, ledger, patching, report, intake, incident, monitor, replay, retrain,
        redteam, changes, schema, demo, chat,
    ):  # fmt: skip
        module.register(app)
    _reflow_help(app)
    return app


app = build_app()


def main(argv: list[str] | None = None) -> None:
    """The console entry point: exit codes 0 pass, 1 policy fails, 2 usage, 3 internal."""
    try:
        app(args=argv, standalone_mode=True)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        err.print("interrupted: finished batches are checkpointed; run the command again")
        raise SystemExit(130) from None
    except Exception as exc:  # the last line of defence: never a bare traceback
        if os.environ.get("HARDENML_DEBUG") or "--debug" in (argv or sys.argv):
            traceback.print_exc()
        else:
            log = Path(tempfile.gettempdir()) / f"hardenml-error-{os.getpid()}.log"
            log.write_text(traceback.format_exc(), encoding="utf-8")
            err.print(
                f"[bold red]internal error[/]: {escape(type(exc).__name__)}: {escape(str(exc))} "
                f"(a bug, not your input; traceback in {escape(str(log))}, or rerun with "
                "--debug)",
                highlight=False,
            )
        raise SystemExit(EXIT_INTERNAL) from None
