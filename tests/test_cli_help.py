"""`hardenml --help` and every command's help read as prose: one line per paragraph."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from hardenml.cli import _reflowed, build_app


def _commands(app: typer.Typer) -> list[typer.models.CommandInfo]:
    found = list(app.registered_commands)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            found.extend(_commands(group.typer_instance))
    return found


def test_a_wrapped_summary_is_joined_and_a_list_keeps_its_lines() -> None:
    doc = """Acknowledge a submission, check it
    lies inside the threat model.

    - first item
    - second item
    """
    assert _reflowed(doc) == (
        "Acknowledge a submission, check it lies inside the threat model.\n\n"
        "- first item\n- second item"
    )


def test_every_command_summary_is_one_line() -> None:
    for command in _commands(build_app()):
        assert command.help, f"{command.callback} has no help"
        summary = command.help.split("\n\n")[0]
        assert "\n" not in summary, summary


def test_root_help_lists_every_command_and_exits_0() -> None:
    result = CliRunner().invoke(build_app(), ["--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0
    for name in ("scan", "gate", "intake", "retrain", "changes", "monitor", "incident"):
        assert name in result.output
