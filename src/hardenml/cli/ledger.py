"""`hardenml ledger verify | keygen | checkpoint | prove`: the hash chain, checked, and
anchored outside the file by signed checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from hardenml import workflow
from hardenml.cli._shared import EXIT_TAMPERED, ConfigOpt, console, err, fail, note, user_errors
from hardenml.config import CONFIG_FILENAME
from hardenml.ledger.checkpoint import (
    KEY_ENV,
    UNANCHORED_LIMITATION,
    current_checkpoint,
    generate_key,
    key_path_from,
    load_checkpoint,
    load_signing_key,
    load_verify_key,
    prove_inclusion,
    verify_against_checkpoint,
)

KeyOpt = Annotated[
    Path | None,
    typer.Option("--key", "-k", help=f"Ledger key file (default: ${KEY_ENV})."),
]


def ledger_verify(
    config: ConfigOpt = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint", help="A signed checkpoint (or gate report) the ledger must extend."
        ),
    ] = None,
    key: KeyOpt = None,
) -> None:
    """Check the hash chain, and with --checkpoint that the ledger extends a signed one:
    exit 1 and name each edited, deleted or reordered event."""
    with user_errors():
        ws = workflow.Workspace.open(config)
        if checkpoint is not None:
            public_key = load_verify_key(key_path_from(key, purpose="--checkpoint"))
            verdict = verify_against_checkpoint(ws.ledger, load_checkpoint(checkpoint), public_key)
        report = ws.ledger.verify()
    if checkpoint is None:
        if report.ok:
            console.print(f"ledger ok: {report.events} events, head {report.head_hash}")
            note(f"note: {UNANCHORED_LIMITATION}")
            return
        _print_problems(ws, [str(p) for p in report.problems])
        raise typer.Exit(EXIT_TAMPERED)
    if verdict.ok:
        console.print(
            f"ledger ok: {verdict.ledger_size} events extend the signed checkpoint of "
            f"{verdict.checkpoint_size}, head {report.head_hash}"
        )
        return
    _print_problems(ws, verdict.problems)
    raise typer.Exit(EXIT_TAMPERED)


def _print_problems(ws: workflow.Workspace, problems: list[str]) -> None:
    err.print(
        f"[bold red]ledger TAMPERED[/]: {len(problems)} problem(s) in {escape(str(ws.ledger.path))}"
    )
    for problem in problems:
        err.print(f"  - {escape(problem)}")


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def ledger_keygen(
    path: Annotated[
        Path | None,
        typer.Argument(help=f"Where to write the private key (default: ${KEY_ENV})."),
    ] = None,
    config: ConfigOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key.")] = False,
) -> None:
    """Create the Ed25519 key that signs checkpoints: the private key (mode 600) and
    PATH.pub. Keep it outside the workspace: a key beside the ledger protects nothing."""
    with user_errors():
        key_path = key_path_from(path, purpose="keygen")
        workspace_root = _workspace_root(config)
        if workspace_root is not None and _inside(key_path, workspace_root):
            raise fail(
                f"{key_path} is inside the workspace {workspace_root}: whoever can rewrite "
                "the ledger could then re-sign it; write the key elsewhere (a path outside "
                f"the workspace, or ${KEY_ENV})"
            )
        private_path, public_path = generate_key(key_path, overwrite=force)
    console.print(f"private key: {private_path} (mode 600; keep it out of the workspace)")
    console.print(f"public key:  {public_path} (give it to whoever checks checkpoints)")


def _workspace_root(config: Path | None) -> Path | None:
    """The folder of the workspace in use, if there is one (keygen also runs without)."""
    found = config if config is not None else Path.cwd() / CONFIG_FILENAME
    return found.resolve().parent if found.is_file() else None


def ledger_checkpoint(
    config: ConfigOpt = None,
    key: KeyOpt = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the checkpoint here (default: stdout)."),
    ] = None,
) -> None:
    """Sign the ledger's size, Merkle root and chain head; refuses a broken chain (exit 1)."""
    with user_errors():
        ws = workflow.Workspace.open(config)
        key_path = key_path_from(key, purpose="checkpoint")
        signing_key = load_signing_key(key_path)
        report = ws.ledger.verify()
        if not report.ok:
            _print_problems(ws, [str(p) for p in report.problems])
            raise typer.Exit(EXIT_TAMPERED)
        signed = current_checkpoint(ws.ledger, signing_key)
    if _inside(key_path, ws.config.root):
        note(f"warning: the key {key_path} lies inside the workspace; move it out of reach")
    text = json.dumps(signed, indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    console.print(
        f"checkpoint: {signed['tree_size']} events, root {signed['root_hash']} -> {output}"
    )


def ledger_prove(
    event_id: Annotated[str, typer.Argument(help="The event to prove (its event_id).")],
    config: ConfigOpt = None,
    key: KeyOpt = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", help="Prove against this checkpoint (needs the public key)."),
    ] = None,
) -> None:
    """Print an inclusion proof of one event against a signed checkpoint: JSON a third party
    checks with the public key and the standard library (see its `how_to_check`)."""
    with user_errors():
        ws = workflow.Workspace.open(config)
        key_path = key_path_from(key, purpose="prove")
        if checkpoint is None:
            signed = current_checkpoint(ws.ledger, load_signing_key(key_path))
        else:
            signed = load_checkpoint(checkpoint)
            verdict = verify_against_checkpoint(ws.ledger, signed, load_verify_key(key_path))
            if not verdict.ok:
                _print_problems(ws, verdict.problems)
                raise typer.Exit(EXIT_TAMPERED)
        proof = prove_inclusion(ws.ledger, event_id, signed)
    typer.echo(json.dumps(proof, indent=2))


def register(app: typer.Typer) -> None:
    ledger_app = typer.Typer(
        no_args_is_help=True, help="Inspect, verify and anchor the ledger (signed checkpoints)."
    )
    ledger_app.command("verify")(ledger_verify)
    ledger_app.command("keygen")(ledger_keygen)
    ledger_app.command("checkpoint")(ledger_checkpoint)
    ledger_app.command("prove")(ledger_prove)
    app.add_typer(ledger_app, name="ledger")
