"""What `hardenml retrain` asks of the `l2sp_finetune` patch: the `[retrain]` settings and
the replay buffer's latest version, by path and sha256, so the lineage event names the
exact buffer the candidate was trained on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hardenml.config import HardenConfig
from hardenml.continuous.replay import latest_replay
from hardenml.gate.decision import last_release
from hardenml.ledger import Event

RETRAIN_PATCH = "l2sp_finetune"


def retrain_params(config: HardenConfig, events: list[Event]) -> dict[str, Any]:
    """The patch's parameters: `[retrain]` plus the latest replay buffer, if there is one.
    `eps` is left to the patch step, which takes it from the non-held-out requirements."""
    settings = config.retrain
    params: dict[str, Any] = {
        "l2sp": settings.l2sp,
        "epochs": settings.epochs,
        "lr": settings.lr,
        "replay_fraction": settings.replay_fraction,
        "adversary": settings.adversary,
    }
    version = latest_replay(config, events)
    if version is not None:
        params["replay"] = str(config.resolve(Path(version.record.path)))
        params["replay_sha256"] = version.record.sha256
    return params


def retrain_source(config: HardenConfig, events: list[Event]) -> str | None:
    """The model to fine-tune: "released" when the ledger records a release of this model,
    else None (the configured model)."""
    return "released" if last_release(events, config.model.name) is not None else None
