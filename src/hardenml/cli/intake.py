"""`hardenml intake SUBMISSION`: an external report (bug bounty, outside red team) re-run
on the named model and judged against the declared threat model; every step is a ledger
event."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from hardenml import intake as external
from hardenml import workflow
from hardenml.cli._shared import ConfigOpt, TrustOpt, console, fail, user_errors
from hardenml.scan.intake import SubmissionError


def intake(
    submission: Annotated[
        Path,
        typer.Argument(
            help="The .npz (inputs, labels, originals, submitter, ...), or for a chat model "
            "the prompt submission .json (docs/intake.md)."
        ),
    ],
    config: ConfigOpt = None,
    trust: TrustOpt = False,
    by: Annotated[str, typer.Option("--by", help="Who runs the intake (the events' actor).")] = (
        "hardenml"
    ),
) -> None:
    """Acknowledge a submission, check it lies inside the threat model (bounds, budget from
    its originals, norm, query limits; for a chat model the declared probe, turns, turn
    length and query limit), re-run it, and open a credited finding when it reproduces.
    Exit 0 whatever the outcome; 2 for a file that is not a submission."""
    with user_errors():
        ws = workflow.Workspace.open(config)
        try:
            result = external.intake(ws, submission, trust=trust, actor=by)
        except SubmissionError as exc:
            raise fail(str(exc)) from None
    sub, verdict = result.submission, result.verdict
    unit = "samples" if result.prompts is None else "conversations"
    console.print(
        f"received {sub.submission_id} from {escape(sub.submitter)}: {len(verdict.samples)} "
        f"{unit} (ledger event #{result.events[0].seq})"
    )
    if verdict.outcome == "reproduced":
        what = "fool the model" if result.prompts is None else "reproduce on the model"
        console.print(
            f"[bold red]reproduced[/]: {len(verdict.reproduced)} of {len(verdict.in_scope)} "
            f"{unit} inside the threat model {what}; credited finding "
            f"{result.finding_id} ({escape(sub.submitter)})"
        )
    elif verdict.outcome == "not-reproduced":
        console.print(
            f"not reproduced: the model withstood all {len(verdict.in_scope)} {unit} inside "
            "the threat model"
        )
    else:
        console.print("[bold yellow]refused[/]: outside the declared threat model")
    for reason in verdict.reasons():
        console.print(f"  - {escape(reason)}")
    replay = None if result.prompts is None else result.prompts.outcome
    if replay is not None:
        console.print(f"  judged by the {escape(replay.error_rates.words())}")


def register(app: typer.Typer) -> None:
    app.command()(intake)
