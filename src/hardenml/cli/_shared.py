"""What every command shares: consoles, options, progress, and the mapping of errors to
exit codes (0 pass, 1 policy fails, 2 usage or config error, 3 internal error)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

from hardenml.config import CONFIG_ENV, CONFIG_FILENAME, ConfigError, ScanConfig
from hardenml.data import DataError
from hardenml.executors import Executor, ExecutorError, open_executor
from hardenml.gate import EXIT_FAIL, EXIT_INTERNAL, EXIT_TAMPERED, EXIT_USAGE
from hardenml.ledger import LedgerError, LedgerTamperedError
from hardenml.patch import PatchError
from hardenml.targets import TargetError
from hardenml.threats import ThreatError

__all__ = [
    "EXIT_FAIL",
    "EXIT_INTERNAL",
    "EXIT_TAMPERED",
    "EXIT_USAGE",
    "ExecutorName",
    "ExecutorOpt",
    "USER_ERRORS",
    "ConfigOpt",
    "MaxSamplesOpt",
    "MaxSecondsOpt",
    "SchedulerOpt",
    "SequentialOpt",
    "TrustOpt",
    "WorkersOpt",
    "console",
    "err",
    "executor_for",
    "fail",
    "note",
    "progress_display",
    "user_errors",
]

# Without a terminal (CI logs), rich would cut tables at 80 columns: print them full width.
console = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

MaxSamplesOpt = Annotated[
    int | None, typer.Option("--max-samples", help="Evaluate at most this many samples.")
]
MaxSecondsOpt = Annotated[
    float | None,
    typer.Option("--max-seconds", help="Stop starting new batches after this."),
]
SequentialOpt = Annotated[
    bool | None,
    typer.Option("--sequential/--full", help="Stop once every gated decision is settled."),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help=f"Config file (default: ${CONFIG_ENV}, else {CONFIG_FILENAME} in this folder or "
        "the nearest one above it, within the git repository).",
    ),
]


class ExecutorName(StrEnum):
    local = "local"
    dask = "dask"


ExecutorOpt = Annotated[
    ExecutorName | None,
    typer.Option(
        "--executor",
        help="Where the scan's batches run: local (this process) or dask (default: "
        "scan.executor, else local).",
    ),
]
SchedulerOpt = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        help="Join the Dask cluster whose scheduler is at this address (tcp://HOST:8786) "
        "instead of starting a local one on 127.0.0.1 (default: scan.scheduler).",
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        help="Worker processes of the local Dask cluster (default: scan.workers).",
    ),
]
TrustOpt = Annotated[
    bool, typer.Option("--trust", help="Allow loading pickle/joblib model files (runs code).")
]


def executor_for(
    config: ScanConfig, kind: ExecutorName | None, scheduler: str | None, workers: int | None
) -> Executor:
    """The executor the options ask for, the `[scan]` keys filling what they leave out."""
    chosen = kind.value if kind is not None else config.executor
    if scheduler is not None and kind is None:
        chosen = "dask"  # --scheduler alone can only mean joining that cluster
    return open_executor(
        chosen,
        scheduler=scheduler or (config.scheduler if chosen == "dask" else None),
        workers=workers or config.workers,
    )


USER_ERRORS = (
    ConfigError,
    TargetError,
    DataError,
    ThreatError,
    LedgerError,
    PatchError,
    ExecutorError,
)


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print `message` as an error and return the exit to raise."""
    err.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


def note(message: str) -> None:
    err.print(f"[cyan]{escape(message)}[/]")


@contextmanager
def user_errors() -> Iterator[None]:
    """A problem the user can fix gets its message and exit code 2, not a traceback."""
    try:
        yield
    except LedgerTamperedError as exc:
        err.print(f"[bold red]ledger TAMPERED:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_TAMPERED) from None
    except USER_ERRORS as exc:
        raise fail(str(exc)) from None


class _BarProgress:
    def __init__(self, bar: RichProgress) -> None:
        self.bar = bar

    def task(self, label: str, total: int) -> Callable[[int], None]:
        task_id = self.bar.add_task(escape(label), total=total)
        return lambda advance: self.bar.update(task_id, advance=advance)


class LineProgress:
    """Plain progress lines for logs without a terminal: one when a task starts, then at
    most one every `every` seconds and one when it completes, so a long scan in CI shows
    that it is alive without flooding the log."""

    def __init__(self, write: Callable[[str], None], *, every: float = 30.0) -> None:
        self.write = write
        self.every = every

    def task(self, label: str, total: int) -> Callable[[int], None]:
        done = 0
        started = last = time.monotonic()
        self.write(f"{label}: 0/{total}")

        def advance(n: int) -> None:
            nonlocal done, last
            done += n
            now = time.monotonic()
            if done >= total or now - last >= self.every:
                last = now
                self.write(f"{label}: {done}/{total} ({now - started:.0f}s)")

        return advance


@contextmanager
def progress_display() -> Iterator[_BarProgress | LineProgress]:
    """A rich progress bar on a terminal, periodic plain lines otherwise."""
    if not err.is_terminal and not os.environ.get("HARDENML_PROGRESS_BAR"):
        every = float(os.environ.get("HARDENML_PROGRESS_SECONDS", "30"))
        yield LineProgress(lambda line: err.print(escape(line), highlight=False), every=every)
        return
    bar = RichProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )
    with bar:
        yield _BarProgress(bar)
