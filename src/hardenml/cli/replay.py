"""`hardenml replay add | show`: the replay buffer that `hardenml retrain` trains on."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.markup import escape

from hardenml import workflow
from hardenml.cli._shared import ConfigOpt, console, fail, user_errors
from hardenml.continuous import ReplayError, add_findings, latest_replay, rows_from_flagged
from hardenml.continuous.replay import describe, update_replay
from hardenml.data import DataError, read_npz


@contextmanager
def _errors() -> Iterator[None]:
    with user_errors():
        try:
            yield
        except ReplayError as exc:
            raise fail(str(exc)) from None


def _read_flagged(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Arrays `x` (n, *input_shape) and `y` (n,) from an .npz, read without pickle."""
    try:
        arrays = read_npz(path, str(path))
    except DataError as exc:
        raise ReplayError(f"{exc}; write it with numpy.savez(path, x=inputs, y=labels)") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise ReplayError(f"{path} lacks the arrays {missing} (it needs x and y)")
    return arrays["x"], arrays["y"]


def add(
    flagged: Annotated[
        Path | None,
        typer.Option(
            "--flagged",
            help="An .npz of flagged inputs (arrays x and y) instead of the findings' evidence.",
        ),
    ] = None,
    source: Annotated[
        str, typer.Option(help="Source tag of --flagged inputs, e.g. monitor:prod.")
    ] = "monitor",
    severity: Annotated[
        str, typer.Option(help="Severity weight of --flagged inputs: critical|high|medium|low.")
    ] = "high",
    config: ConfigOpt = None,
) -> None:
    """Add the findings' new adversarial examples (or --flagged inputs) to the buffer."""
    with _errors():
        ws = workflow.Workspace.open(config)
        if flagged is not None:
            x, y = _read_flagged(flagged)
            version, event = update_replay(
                ws.config, ws.ledger, rows_from_flagged(x, y, source=source, severity=severity)
            )
        else:
            added = add_findings(ws.config, ws.ledger)
            if added is None:
                console.print("no new adversarial examples in the findings' evidence")
                return
            version, event, problems = added
            for problem in problems:
                console.print(
                    f"[yellow]skipped[/] {escape(problem.finding_id)} "
                    f"{escape(problem.path)}: {escape(problem.reason)}"
                )
    r = version.record
    console.print(
        f"replay buffer v{r.version}: {r.kept} of {r.offered} rows offered kept, "
        f"{r.size}/{r.capacity} held -> {escape(r.path)} (sha256 {r.sha256[:12]}, "
        f"ledger #{event.seq})"
    )


def show(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """The buffer's latest version: its file, size and rows by source, severity, origin."""
    with _errors():
        ws = workflow.Workspace.open(config)
        version = latest_replay(ws.config, ws.ledger.events())
    if version is None:
        raise fail("the replay buffer is empty: run `hardenml replay add` after a scan")
    shown = describe(version)
    if as_json:
        sys.stdout.write(json.dumps(shown, indent=2) + "\n")
        return
    console.print(
        f"replay buffer v{shown['version']} (ledger #{shown['ledger_seq']}): {shown['size']}/"
        f"{shown['capacity']} rows, {escape(shown['path'])} (sha256 {shown['sha256'][:12]})"
    )
    for key in ("sources", "severity", "origin"):
        counts = ", ".join(f"{k} {v}" for k, v in shown[key].items())
        console.print(f"  {key}: {escape(counts or '-')}")


def register(app: typer.Typer) -> None:
    replay_app = typer.Typer(
        no_args_is_help=True, help="The replay buffer of inputs that broke the model."
    )
    replay_app.command("add")(add)
    replay_app.command("show")(show)
    app.add_typer(replay_app, name="replay")
