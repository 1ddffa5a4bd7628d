"""The `hardenml` command: parses arguments, calls the library, prints. Nothing more."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.table import Table

from hardenml import workflow
from hardenml.config import CONFIG_FILENAME, ConfigError
from hardenml.data import DataError
from hardenml.gate import EXIT_TAMPERED, EXIT_USAGE
from hardenml.ledger import LedgerError, LedgerTamperedError, findings_state
from hardenml.scan import ScanResult
from hardenml.targets import TargetError
from hardenml.threats import ThreatError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Harden ML models before they ship."
)
findings_app = typer.Typer(no_args_is_help=True, help="List and inspect findings.")
ledger_app = typer.Typer(no_args_is_help=True, help="Inspect and verify the ledger.")
app.add_typer(findings_app, name="findings")
app.add_typer(ledger_app, name="ledger")

console = Console()
err = Console(stderr=True)

MaxSamplesOpt = Annotated[
    int | None, typer.Option("--max-samples", help="Evaluate at most this many samples.")
]
MaxSecondsOpt = Annotated[
    float | None, typer.Option("--max-seconds", help="Stop starting new batches after this.")
]
SequentialOpt = Annotated[
    bool | None,
    typer.Option("--sequential/--full", help="Stop once every gated decision is settled."),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help=f"Config file (default: ./{CONFIG_FILENAME})."),
]
TrustOpt = Annotated[
    bool, typer.Option("--trust", help="Allow loading pickle/joblib model files (runs code).")
]
USER_ERRORS = (ConfigError, TargetError, DataError, ThreatError, LedgerError)


class _BarProgress:
    def __init__(self, bar: RichProgress) -> None:
        self.bar = bar

    def task(self, label: str, total: int) -> Callable[[int], None]:
        task_id = self.bar.add_task(escape(label), total=total)
        return lambda advance: self.bar.update(task_id, advance=advance)


@contextmanager
def _progress() -> Iterator[_BarProgress]:
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


@contextmanager
def _user_errors() -> Iterator[None]:
    """A problem the user can fix gets its message and exit code 2, not a traceback; a
    ledger whose hash chain is broken is refused with `EXIT_TAMPERED`."""
    try:
        yield
    except LedgerTamperedError as exc:
        err.print(f"[bold red]ledger TAMPERED:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_TAMPERED) from None
    except USER_ERRORS as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_USAGE) from None


@app.command()
def init(
    path: Annotated[Path, typer.Option(help="Where to write the config.")] = Path(CONFIG_FILENAME),
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter hardenml.toml."""
    if path.exists() and not force:
        err.print(f"[bold red]error:[/] {path} exists; pass --force to overwrite it")
        raise typer.Exit(EXIT_USAGE)
    path.write_text(files("hardenml").joinpath("templates/hardenml.toml").read_text())
    console.print(
        f"wrote {path}: edit [bold]model[/], [bold]data[/] and [bold]policy[/], "
        "then run [bold]hardenml scan[/]"
    )


@app.command()
def scan(
    config: ConfigOpt = None,
    trust: TrustOpt = False,
    seed: Annotated[int | None, typer.Option(help="Override data.seed.")] = None,
    max_samples: MaxSamplesOpt = None,
    max_seconds: MaxSecondsOpt = None,
    sequential: SequentialOpt = None,
) -> None:
    """Run every declared threat, record measurements and findings in the ledger.

    Interrupted, the same command resumes from the last finished batch."""
    with _user_errors():
        ws = workflow.Workspace.open(config)
        with _progress() as progress:
            result = workflow.scan(
                ws,
                trust=trust,
                seed=seed,
                progress=progress,
                log=_note,
                max_samples=max_samples,
                max_seconds=max_seconds,
                sequential=sequential,
            )
    _print_scan(result, ws.config.policy.confidence)


def _note(message: str) -> None:
    err.print(f"[cyan]{escape(message)}[/]")


def _print_scan(result: ScanResult, confidence: float) -> None:
    table = Table(
        title=f"scan {result.run_id}: {escape(result.model)} (n={result.n} of "
        f"{result.n_available}, seed={result.seed}, {result.stop_reason})"
    )
    for col in ("metric", "value", f"{confidence:.0%} CI"):
        table.add_column(col)
    for m in result.measurements:
        table.add_row(escape(m.key), f"{m.value:.3f}", f"{m.ci_low:.3f} - {m.ci_high:.3f}")
    console.print(table)
    for c in result.checks:
        seq = c.sequential
        if seq is not None:
            console.print(
                f"  {escape(c.name)}: {c.decision} after {seq.n} samples "
                f"({'settled' if seq.settled else 'not settled'}; anytime CI "
                f"{seq.ci_low:.3f} - {seq.ci_high:.3f} vs {c.threshold:.3f})"
            )
    if result.findings:
        _print_findings([f.as_dict() for f in result.findings], title="findings of this scan")
    else:
        console.print("no policy violations found")


@app.command()
def gate(
    config: ConfigOpt = None,
    trust: TrustOpt = False,
    rescan: Annotated[bool, typer.Option(help="Scan again even if a matching run exists.")] = False,
    report: Annotated[Path | None, typer.Option(help="JSON report path.")] = None,
) -> None:
    """Decide the release: exit 0 when the policy holds, 1 when it does not, 2 on errors."""
    with _user_errors():
        ws = workflow.Workspace.open(config)
        with _progress() as progress:
            decision = workflow.gate(
                ws, trust=trust, rescan=rescan, progress=progress, report_path=report, log=_note
            )
    table = Table(title=f"release gate: {escape(decision.run.model)} (run {decision.run.run_id})")
    for col in ("check", "value", "CI", "n", "required", "decision", "result"):
        table.add_column(col)
    for c in decision.checks:
        m = c.measurement
        value = "-" if m is None else f"{m.value:.3f}"
        ci = "-" if m is None else f"{m.ci_low:.3f} - {m.ci_high:.3f}"
        verdict = "[green]pass[/]" if c.passed else "[bold red]FAIL[/]"
        n = "-" if m is None else str(m.n)
        table.add_row(escape(c.name), value, ci, n, f">= {c.threshold:.3f}", c.decision, verdict)
    console.print(table)
    for f in decision.blocking_findings:
        console.print(
            f"[red]blocking[/] {f.severity} finding {f.finding_id} "
            f"(owner {escape(f.owner)}, due {f.due}): {escape(f.title)}"
        )
    if decision.passed:
        console.print("[bold green]GATE PASSED[/]")
    else:
        console.print("[bold red]GATE FAILED[/]: " + "; ".join(escape(r) for r in decision.reasons))
    raise typer.Exit(decision.exit_code)


def _print_findings(rows: list[dict[str, object]], *, title: str) -> None:
    table = Table(title=title)
    table.add_column("id", no_wrap=True)
    for col in ("severity", "status", "owner", "due", "title"):
        table.add_column(col)
    for f in rows:
        table.add_row(
            *(
                escape(str(f.get(k, "-")))
                for k in ("finding_id", "severity", "status", "owner", "due", "title")
            )
        )
    console.print(table)


@findings_app.command("list")
def findings_list(
    config: ConfigOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Include fixed findings.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Open findings (with --all, every finding), most severe first."""
    with _user_errors():
        ws = workflow.Workspace.open(config)
        state = findings_state(ws.ledger.events())
    order = ("critical", "high", "medium", "low")
    rows = sorted(
        (f for f in state.values() if all_ or f.is_open),
        key=lambda f: (order.index(f.severity), f.finding_id),
    )
    if as_json:
        sys.stdout.write(json.dumps([f.as_dict() for f in rows], indent=2) + "\n")
        return
    if not rows:
        console.print("no open findings" if not all_ else "no findings")
        return
    _print_findings([f.as_dict() for f in rows], title="findings")


@findings_app.command("show")
def findings_show(
    finding_id: str,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """One finding in full: evidence, exploitation path, remediation, history."""
    with _user_errors():
        ws = workflow.Workspace.open(config)
        state = findings_state(ws.ledger.events())
    match = [
        f
        for f in state.values()
        if f.finding_id == finding_id or f.fingerprint.startswith(finding_id.removeprefix("HML-"))
    ]
    if not match:
        err.print(
            f"[bold red]error:[/] no finding {escape(finding_id)}; "
            "see `hardenml findings list --all`"
        )
        raise typer.Exit(EXIT_USAGE)
    f = match[0]
    if as_json:
        sys.stdout.write(json.dumps(f.as_dict(), indent=2) + "\n")
        return
    console.print(f"[bold]{f.finding_id}[/] [{f.severity}] {escape(f.title)}")
    for label, value in (
        ("status", f.status),
        ("owner", f.owner),
        ("due", f.due),
        ("model", f.model),
        ("threat", f.threat),
        ("budget", f.budget),
        ("value", f"{f.value:.3f} (CI {f.ci[0]:.3f}-{f.ci[1]:.3f})"),
        ("threshold", f.threshold),
        ("fingerprint", f.fingerprint),
        ("exploitation", f.exploitation),
        ("remediation", f.remediation),
    ):
        console.print(f"  {label:<13}{escape(str(value))}")
    for ev in f.evidence:
        console.print(
            f"  evidence     {escape(str(ev.get('path')))} ({ev.get('count')} examples, "
            f"sha256 {str(ev.get('sha256'))[:12]})"
        )
    console.print("  history:")
    for h in f.history:
        console.print(
            f"    #{h['seq']} {h['ts']} {escape(str(h['kind']))}"
            + (f" run {h['run_id']}" if "run_id" in h else "")
        )


@ledger_app.command("verify")
def ledger_verify(config: ConfigOpt = None) -> None:
    """Check the hash chain: exit 1 and name each edited, deleted or reordered event."""
    with _user_errors():
        ws = workflow.Workspace.open(config)
        report = ws.ledger.verify()
    if report.ok:
        console.print(f"ledger ok: {report.events} events, head {report.head_hash}")
        return
    err.print(
        f"[bold red]ledger TAMPERED[/]: {len(report.problems)} problem(s) in "
        f"{escape(str(ws.ledger.path))}"
    )
    for p in report.problems:
        err.print(f"  - {escape(str(p))}")
    raise typer.Exit(EXIT_TAMPERED)


@app.command()
def demo(out: Annotated[Path, typer.Option(help="Workspace folder.")] = Path("demo-run")) -> None:
    """Train real models on real data, scan them, record findings and gate the release."""
    from hardenml.demo import run_demo

    raise typer.Exit(run_demo(out, console=console))


def main() -> None:
    app()


def _register_commands() -> None:
    """Commands of the later rooms live in `hardenml.commands.*`; importing registers them."""
    import importlib
    import pkgutil

    import hardenml.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"hardenml.commands.{info.name}")


_register_commands()
