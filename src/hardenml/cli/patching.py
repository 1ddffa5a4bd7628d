"""`hardenml patch`, `hardenml validate`, `hardenml release`: the loop's second half."""

from __future__ import annotations

import json
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from hardenml import workflow
from hardenml.cli._shared import (
    ConfigOpt,
    TrustOpt,
    console,
    fail,
    progress_display,
    user_errors,
)
from hardenml.gate import EXIT_FAIL
from hardenml.gate.decision import ReleaseError
from hardenml.patch import PatchError, available_patches, patch_class, patch_parameters
from hardenml.validate import ValidationCheck


@contextmanager
def _errors() -> Iterator[None]:
    """The shared user errors, plus this module's: message and exit code 2."""
    with user_errors():
        try:
            yield
        except ReleaseError as exc:
            raise fail(str(exc)) from None


def parse_settings(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` pairs; a value is read as a TOML literal (0.1, true, [1, 2]), else a string."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise PatchError(f"--set takes KEY=VALUE, got {item!r}")
        try:
            value: Any = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        out[key.strip()] = value
    return out


def _list_patches() -> None:
    table = Table(title="registered patches")
    table.add_column("name")
    table.add_column("model kinds")
    table.add_column("parameters (defaults)")
    for name in available_patches():
        params = ", ".join(f"{k}={v!r}" for k, v in patch_parameters(name).items())
        table.add_row(escape(name), escape(", ".join(patch_class(name).kinds)), escape(params))
    console.print(table)


def patch(
    with_: Annotated[
        str | None, typer.Option("--with", help="The defence to apply (see --list).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="A patch parameter, KEY=VALUE (repeatable), e.g. epochs=3."),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            "--from", help="Model file to patch, or 'released' (default: the configured model)."
        ),
    ] = None,
    scratch: Annotated[
        bool, typer.Option("--scratch", help="Train from scratch instead of fine-tuning.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of every random choice of the patch.")] = 0,
    list_: Annotated[bool, typer.Option("--list", help="List the patches and exit.")] = False,
    config: ConfigOpt = None,
    trust: TrustOpt = False,
) -> None:
    """Apply a defence; write the patched model as a new artifact and its lineage event."""
    if list_:
        _list_patches()
        return
    with _errors():
        if with_ is None:
            raise PatchError(f"pass --with NAME, one of {available_patches()}")
        params = parse_settings(set_ or [])
        if scratch:
            params["init"] = "scratch"
        ws = workflow.Workspace.open(config)
        if ws.is_chat:
            _patch_chat(ws, with_, params, source)
            return
        with progress_display() as progress:
            outcome = workflow.patch(
                ws,
                with_,
                params=params,
                model_path=source,
                seed=seed,
                trust=trust,
                progress=progress,
            )
    result = outcome.result
    console.print(
        f"patched with [bold]{escape(with_)}[/] in {outcome.event.payload['seconds']:.1f}s -> "
        f"{escape(str(outcome.artifact))} (sha256 {outcome.sha256[:12]}, "
        f"parent {outcome.parent_sha256[:12]}, ledger #{outcome.event.seq})"
    )
    _print_metrics(result.metrics)
    if outcome.held_out:
        console.print(
            f"held-out threats, not trained on: {escape(', '.join(outcome.held_out))} "
            "(validate reports them separately)"
        )
    for event in result.events:
        console.print(
            f"[yellow]{escape(event['kind'])}[/] at epoch {event['epoch']}: PGD accuracy "
            f"{event['pgd_accuracy']:.3f} (best {event['best_pgd_accuracy']:.3f} at epoch "
            f"{event['best_epoch']}), FGSM {event['fgsm_accuracy']:.3f}; {escape(event['action'])}"
        )
    console.print(
        f"next: hardenml validate {escape(str(ws.model_path))} {escape(str(outcome.artifact))} "
        "--promote"
    )


def _patch_chat(
    ws: workflow.Workspace, name: str, params: dict[str, Any], source: str | None
) -> None:
    """A chat model's patch: a guard file in front of the model, recorded in the ledger."""
    outcome = workflow.patch_chat(ws, name, params=params, model_path=source)
    chain = " -> ".join(g.patch for g in outcome.guards)
    console.print(
        f"guarded with [bold]{escape(name)}[/] -> {escape(str(outcome.artifact))} (sha256 "
        f"{outcome.sha256[:12]}, guards: model -> {escape(chain)}, ledger #{outcome.event.seq})"
    )
    console.print(f"next: hardenml validate configured {escape(str(outcome.artifact))} --promote")


def _print_metrics(metrics: dict[str, Any], prefix: str = "") -> None:
    for key, value in metrics.items():
        if isinstance(value, dict) and all(not isinstance(v, dict | list) for v in value.values()):
            shown = ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
            console.print(f"  {escape(prefix + key)}: {escape(shown)}")
        elif isinstance(value, dict):
            _print_metrics(value, prefix=f"{prefix}{key}.")
        elif isinstance(value, list):
            console.print(f"  {escape(prefix + key)}: {escape(json.dumps(value))}")
        else:
            console.print(f"  {escape(prefix + key)}: {escape(_fmt(value))}")


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def validate(
    baseline: Annotated[
        str,
        typer.Argument(
            help="Baseline model file, or 'released' (chat models: a guard file, 'configured')."
        ),
    ],
    candidate: Annotated[
        str, typer.Argument(help="Candidate model file (chat models: a guard file).")
    ],
    promote: Annotated[
        bool,
        typer.Option(help="If the candidate passes, point the config's model at it."),
    ] = False,
    seed: Annotated[int | None, typer.Option(help="Override data.seed.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
    config: ConfigOpt = None,
    trust: TrustOpt = False,
) -> None:
    """Paired comparison on the same samples: exit 0 if the candidate passes, 1 if not."""
    with _errors():
        ws = workflow.Workspace.open(config)
        with progress_display() as progress:
            verdict = workflow.validate(
                ws, baseline, candidate, seed=seed, trust=trust, progress=progress, promote=promote
            )
    if as_json:
        sys.stdout.write(json.dumps(verdict.as_dict(), indent=2) + "\n")
    else:
        table = Table(title=f"validation on n={verdict.n} paired samples (seed {verdict.seed})")
        for col in ("check", "result", "reason"):
            table.add_column(col)
        _check_rows(table, verdict.checks)
        console.print(table)
        excluded = verdict.extra.get("replay_excluded")
        if excluded:
            console.print(
                f"left out {excluded['rows']} of {excluded['of']} evaluation rows that the "
                "models were trained on through the replay buffer"
                + (
                    f" ({excluded['replay_rows_without_id']} replay rows from older buffers "
                    "carry no source id and could not be matched)"
                    if excluded["replay_rows_without_id"]
                    else ""
                )
            )
        if verdict.held_out_threats:
            held = Table(
                title=f"held-out threats (never trained on): {', '.join(verdict.held_out_threats)}"
            )
            for col in ("check", "result", "reason"):
                held.add_column(col)
            _check_rows(held, verdict.held_out)
            console.print(held)
        if verdict.passed:
            console.print("[bold green]CANDIDATE PASSES[/]")
            if promote:
                console.print(f"the config's model now points at {escape(candidate)}")
        else:
            console.print("[bold red]CANDIDATE FAILS[/]")
    if not verdict.passed:
        raise typer.Exit(EXIT_FAIL)


def _check_rows(table: Table, checks: list[ValidationCheck]) -> None:
    for c in checks:
        shown = "[green]pass[/]" if c.passed else "[bold red]FAIL[/]"
        table.add_row(escape(c.name), shown, escape(c.reason))


def release(
    model: Annotated[
        Path | None,
        typer.Argument(
            help="Model file (default: the configured model; chat models: a guard file)."
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Release without a passing gate decision (recorded).")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Record a model as released: later gates check regressions against it."""
    with _errors():
        ws = workflow.Workspace.open(config)
        event = workflow.release(ws, model, force=force)
    p = event.payload
    what = escape(p["path"])
    if p.get("chat") is not None:
        chat = p["chat"]
        chain = " -> ".join(g["patch"] for g in chat["guards"]) or "no guards"
        endpoint = escape(str(chat["base_url"]))
        what = (
            f"(chat endpoint {endpoint} sha256 {chat['endpoint_sha256'][:12]}, "
            f"guards: model -> {escape(chain)}{', ' + what if what else ''})"
        )
    console.print(
        f"released {escape(p['model'])} {what} (sha256 {p['model_sha256'][:12]}) "
        f"as ledger event #{event.seq}" + (" [yellow](forced)[/]" if p["forced"] else "")
    )


def register(app: typer.Typer) -> None:
    app.command()(patch)
    app.command()(validate)
    app.command()(release)
