"""`hardenml redteam`: the nightly search past the release scan; reports only what is new."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from hardenml import workflow
from hardenml.cli._shared import (
    EXIT_FAIL,
    ConfigOpt,
    TrustOpt,
    console,
    fail,
    progress_display,
    user_errors,
)
from hardenml.continuous.redteam import RedteamResult


def _print(result: RedteamResult) -> None:
    m = result.clean
    seq = "-" if result.event is None else result.event.seq
    console.print(
        f"red team {result.run_id} of {escape(result.model)}: {len(result.units)} attack/budget "
        f"pairs on {result.n} samples in {result.seconds:.1f}s ({result.stop_reason}; "
        f"ledger #{seq}); clean accuracy {m.value:.3f} "
        f"[{m.ci_low:.3f}, {m.ci_high:.3f}]"
    )
    for unit in result.units:
        v = unit.measurement
        judged = (
            "no requirement covers this budget"
            if unit.requirement is None
            else f"{'FAILS' if unit.finding else 'meets'} {unit.requirement.key} "
            f">= {unit.requirement.min_accuracy:g}"
        )
        console.print(
            f"  {escape(unit.attack)}@{unit.budget:g}: robust {v.value:.3f} "
            f"[{v.ci_low:.3f}, {v.ci_high:.3f}], {escape(judged)}",
            highlight=False,
        )
    if result.not_covered:
        console.print(
            f"[yellow]not covered[/] (time budget): {escape(', '.join(result.not_covered))}"
        )
    for attack, reason in result.skipped.items():
        console.print(f"  [dim]skipped {escape(attack)}: {escape(reason)}[/]")
    if result.known:
        console.print(f"already in the ledger: {escape(', '.join(result.known))}")
    if not result.new:
        console.print("[green]nothing new[/]")
        return
    console.print(f"[bold red]{len(result.new)} new finding(s)[/]:")
    for finding in result.new:
        again = " (reopened)" if finding.finding_id in result.reopened else ""
        console.print(
            f"  {escape(finding.finding_id)} [{finding.severity}]{again} {escape(finding.title)}"
        )


def redteam(
    seed: Annotated[
        int, typer.Option(help="Seed of the drawn parameters and of every attack's draws.")
    ] = 0,
    time_budget: Annotated[
        float | None,
        typer.Option(
            "--time-budget",
            min=0.0,
            help="Stop starting new batches after this many seconds and report what was "
            "covered (default: [redteam] max_seconds, else no limit).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Also write the JSON report to this file.")
    ] = None,
    config: ConfigOpt = None,
    trust: TrustOpt = False,
) -> None:
    """Search past the release scan within the threat model: every registered threat that
    applies, at every budget of its space, with more effort drawn at random. Exit 0 when
    nothing is new, 1 when it opened (or reopened) findings, 2 for a config error."""
    with user_errors():
        ws = workflow.Workspace.open(config)
        with progress_display() as progress:
            result = workflow.redteam(
                ws, seed=seed, trust=trust, progress=progress, max_seconds=time_budget
            )
    report = result.as_dict()
    if out is not None:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise fail(f"cannot write --out {out}: {exc.strerror or exc}") from None
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        _print(result)
    if result.new:
        raise typer.Exit(EXIT_FAIL)


def register(app: typer.Typer) -> None:
    app.command()(redteam)
