"""`hardenml init | scan | gate`: the release path."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from hardenml import workflow
from hardenml.cli._shared import (
    EXIT_USAGE,
    ConfigOpt,
    ExecutorOpt,
    MaxSamplesOpt,
    MaxSecondsOpt,
    SchedulerOpt,
    SequentialOpt,
    TrustOpt,
    WorkersOpt,
    console,
    err,
    executor_for,
    note,
    progress_display,
    user_errors,
)
from hardenml.cli.findings import print_findings
from hardenml.config import CONFIG_FILENAME, load_config
from hardenml.report import gate_report_json
from hardenml.report.security_policy import security_policy as security_policy_text
from hardenml.scan import ScanResult

SECURITY_FILENAME = "SECURITY.md"


def init(
    path: Annotated[Path, typer.Option(help="Where to write the config.")] = Path(CONFIG_FILENAME),
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
    security_policy: Annotated[
        bool,
        typer.Option(
            "--security-policy",
            help="Also write SECURITY.md beside the config: a disclosure-policy starter whose "
            "scope is the threat model (an existing config is kept and read).",
        ),
    ] = False,
    contact: Annotated[
        str | None,
        typer.Option("--security-contact", help="Where reports go (with --security-policy)."),
    ] = None,
) -> None:
    """Write a commented starter hardenml.toml (and, opt-in, a SECURITY.md)."""
    if security_policy and not (contact or "").strip():
        err.print(
            "[bold red]error:[/] --security-policy needs --security-contact ADDRESS: the "
            "address (or form) that security reports go to"
        )
        raise typer.Exit(EXIT_USAGE)
    keep_config = security_policy and path.exists() and not force
    if path.exists() and not force and not keep_config:
        err.print(f"[bold red]error:[/] {path} exists; pass --force to overwrite it")
        raise typer.Exit(EXIT_USAGE)
    if security_policy:
        policy_path = path.parent / SECURITY_FILENAME
        if policy_path.exists() and not force:
            err.print(f"[bold red]error:[/] {policy_path} exists; pass --force to overwrite it")
            raise typer.Exit(EXIT_USAGE)
    if not keep_config:
        path.write_text(files("hardenml").joinpath("templates/hardenml.toml").read_text())
        console.print(
            f"wrote {path}: edit [bold]model[/], [bold]data[/] and [bold]policy[/], "
            "then run [bold]hardenml scan[/]"
        )
    if security_policy:
        assert contact is not None
        with user_errors():
            text = security_policy_text(load_config(path), contact=contact.strip())
        policy_path.write_text(text, encoding="utf-8")
        console.print(
            f"wrote {policy_path}: its scope is {path}'s threat model; review the safe-harbour "
            "terms before publishing it"
        )


def scan(
    config: ConfigOpt = None,
    trust: TrustOpt = False,
    seed: Annotated[int | None, typer.Option(help="Override data.seed.")] = None,
    max_samples: MaxSamplesOpt = None,
    max_seconds: MaxSecondsOpt = None,
    sequential: SequentialOpt = None,
    executor: ExecutorOpt = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Run every declared threat, record measurements and findings in the ledger.

    Interrupted, the same command resumes from the last finished batch (on either
    executor: the same seed gives the same numbers on both)."""
    with user_errors():
        ws = workflow.Workspace.open(config)
        with (
            executor_for(ws.config.scan, executor, scheduler, workers) as running,
            progress_display() as progress,
        ):
            result = workflow.scan(
                ws,
                trust=trust,
                seed=seed,
                progress=progress,
                log=note,
                max_samples=max_samples,
                max_seconds=max_seconds,
                sequential=sequential,
                executor=running,
            )
    _print_scan(result, ws.config.policy.confidence)


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
    if result.stochastic is not None:
        console.print(escape(result.stochastic.describe()))
    for c in result.checks:
        seq = c.sequential
        if seq is not None:
            console.print(
                f"  {escape(c.name)}: {c.decision} after {seq.n} samples "
                f"({'settled' if seq.settled else 'not settled'}; anytime CI "
                f"{seq.ci_low:.3f} - {seq.ci_high:.3f} vs {c.threshold:.3f})"
            )
    if result.findings:
        print_findings([f.as_dict() for f in result.findings], title="findings of this scan")
    else:
        console.print("no policy violations found")


def gate(
    config: ConfigOpt = None,
    trust: TrustOpt = False,
    rescan: Annotated[bool, typer.Option(help="Scan again even if a matching run exists.")] = False,
    report: Annotated[Path | None, typer.Option(help="JSON report path.")] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the gate report (gate-report.json) on stdout and nothing else; "
            "progress and messages go to stderr.",
        ),
    ] = False,
    executor: ExecutorOpt = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Decide the release: exit 0 when the policy holds, 1 when it does not, 2 on errors.

    When it cannot decide (exit 2 or 3), the reports of the previous decision are removed,
    so that no earlier PASS is read as this run's."""
    try:
        with user_errors():
            ws = workflow.Workspace.open(config)
            with (
                executor_for(ws.config.scan, executor, scheduler, workers) as running,
                progress_display() as progress,
            ):
                decision = workflow.gate(
                    ws,
                    trust=trust,
                    rescan=rescan,
                    progress=progress,
                    report_path=report,
                    log=note,
                    executor=running,
                )
    except BaseException:
        for path in workflow.withdraw_reports(config, report):
            note(f"removed {path}: the previous decision's report is not this run's")
        raise
    if as_json:
        typer.echo(gate_report_json(ws.config, decision), nl=False)
        raise typer.Exit(decision.exit_code)
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
    for c in decision.checks:
        if c.attacks:
            console.print(f"  {escape(c.name)}: {escape(c.judged_on)}")
    for check in decision.extra_checks:
        mark = "[green]pass[/]" if check.passed else "[bold red]FAIL[/]"
        if check.name == "policy":
            mark = "[bold yellow]warning[/]"
        console.print(f"  {escape(check.name)}: {mark} {escape(check.reason)}")
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


def register(app: typer.Typer) -> None:
    app.command()(init)
    app.command()(scan)
    app.command()(gate)
