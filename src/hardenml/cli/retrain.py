"""`hardenml retrain`: a candidate fine-tuned on clean, adversarial and replayed examples."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from hardenml import workflow
from hardenml.cli._shared import ConfigOpt, TrustOpt, console, fail, progress_display, user_errors
from hardenml.continuous import ReplayError


def retrain(
    seed: Annotated[int, typer.Option(help="Seed of every random choice of the fine-tune.")] = 0,
    config: ConfigOpt = None,
    trust: TrustOpt = False,
) -> None:
    """Fine-tune the released model (L2-SP toward its weights) into a candidate; it is
    promoted only through `hardenml validate` and `hardenml gate`."""
    with user_errors():
        try:
            ws = workflow.Workspace.open(config)
            with progress_display() as progress:
                outcome = workflow.retrain(ws, seed=seed, trust=trust, progress=progress)
        except ReplayError as exc:
            raise fail(str(exc)) from None
    metrics = outcome.result.metrics
    p = outcome.event.payload
    console.print(
        f"retrained {escape(p['parent'])} in {p['seconds']:.1f}s -> "
        f"{escape(str(outcome.artifact))} (sha256 {outcome.sha256[:12]}, "
        f"ledger #{outcome.event.seq})"
    )
    replay = metrics["replay_accuracy"]
    if replay["before"] is not None:
        console.print(
            f"  replayed examples ({metrics['replay_n']}): accuracy {replay['before']:.3f} -> "
            f"{replay['after']:.3f}"
        )
    else:
        console.print(
            "  no replay buffer yet (`hardenml replay add`): clean and adversarial data only"
        )
    before, after = metrics["before"], metrics["after"]
    console.print(
        f"  holdout clean {before['clean']:.3f} -> {after['clean']:.3f}, PGD at eps "
        f"{metrics['eps']:g} {before['pgd']:.3f} -> {after['pgd']:.3f}; L2-SP {metrics['l2sp']:g}, "
        f"||w - w0||^2 = {metrics['l2sp_distance']:.4g}"
    )
    if outcome.held_out:
        console.print(f"  held-out threats, not trained on: {escape(', '.join(outcome.held_out))}")
    console.print(
        f"next: hardenml validate {escape(p['parent'])} {escape(p['artifact'])}, then hardenml "
        "gate; retrain never promotes a model itself"
    )


def register(app: typer.Typer) -> None:
    app.command()(retrain)
