"""What `hardenml retrain` asks of the `l2sp_finetune` patch, and what validating its
candidate must leave out.

The patch gets the `[retrain]` settings and the replay buffer's latest version; the
lineage event names that buffer by its path relative to the workspace and its sha256
(`lineage_params`), so a ledger moved with its workspace still points at it.

The replay rows from findings are adversarial examples crafted from the *evaluation*
split. A model trained on them and then validated on that split is measured partly on
data it has seen, which flatters it. `replayed_source_ids` walks a model's lineage (each
`model.patched` event back through its parents) to every replay buffer it or an ancestor
was trained on, and returns the ids of the rows those buffer rows came from
(`replay.row_ids`); `hardenml validate` leaves those rows out for both models, so the
comparison stays paired and honest, and says how many it left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hardenml.config import HardenConfig
from hardenml.continuous.replay import latest_replay, replay_version_rows
from hardenml.gate.decision import last_release
from hardenml.ledger import Event
from hardenml.records import MODEL_PATCHED

RETRAIN_PATCH = "l2sp_finetune"


def retrain_params(config: HardenConfig, events: list[Event]) -> dict[str, Any]:
    """The patch's parameters: `[retrain]` plus the latest replay buffer, if there is one
    (its absolute path, which the patch reads). `eps` is left to the patch step, which
    takes it from the non-held-out requirements."""
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


def lineage_params(config: HardenConfig, events: list[Event]) -> dict[str, Any]:
    """What the lineage event records instead of the patch's own values: the buffer's path
    as the `replay.updated` event names it (relative to the workspace where it lies inside
    it), beside its sha256, never this machine's absolute path."""
    version = latest_replay(config, events)
    if version is None:
        return {}
    return {"replay": version.record.path, "replay_sha256": version.record.sha256}


def retrain_source(config: HardenConfig, events: list[Event]) -> str | None:
    """The model to fine-tune: "released" when the ledger records a release of this model,
    else None (the configured model)."""
    return "released" if last_release(events, config.model.name) is not None else None


@dataclass(frozen=True)
class ReplayedRows:
    """The source-row ids of every replay row that models were trained on, the buffers
    (by sha256) they came from, and how many of those rows carry no id (buffers written
    before rows carried one: they cannot be matched to evaluation rows)."""

    ids: frozenset[str]
    buffers: tuple[str, ...]
    without_id: int


def replayed_source_ids(
    config: HardenConfig, events: list[Event], model_sha256s: Iterable[str]
) -> ReplayedRows:
    """The source ids of the replay rows any of these models, or any model its lineage
    was patched from, was trained on (`params.replay_sha256` of `model.patched`)."""
    patched = {e.payload["artifact_sha256"]: e.payload for e in events if e.kind == MODEL_PATCHED}
    todo = [sha for sha in model_sha256s if sha]
    seen: set[str] = set()
    buffers: list[str] = []
    while todo:
        sha = todo.pop()
        if sha in seen or sha not in patched:
            continue
        seen.add(sha)
        payload = patched[sha]
        buffer = (payload.get("params") or {}).get("replay_sha256")
        if buffer and buffer not in buffers:
            buffers.append(str(buffer))
        if payload.get("parent_sha256"):
            todo.append(str(payload["parent_sha256"]))
    ids: set[str] = set()
    without_id = 0
    for sha in buffers:
        source = replay_version_rows(config, events, sha).source_id
        ids.update(str(i) for i in source if i)
        without_id += int(sum(1 for i in source if not i))
    return ReplayedRows(frozenset(ids), tuple(buffers), without_id)
