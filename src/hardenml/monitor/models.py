"""The model versions the service may load: the ledger's released and patched artifacts.

Only a file whose sha256 the ledger records as released (`model.released`) or as a patch
artifact (`model.patched`) is served, and its hash is checked on load (STYLE 12: artifacts
are data plus checksums). It is loaded as `hardenml scan` loads it (`targets.load_target`,
with the kind, factory and factory arguments its lineage event records), so pickle stays
refused without `--trust`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hardenml.config import HardenConfig
from hardenml.gate.decision import RELEASE_EVENT, last_release
from hardenml.ledger import Event
from hardenml.monitor.readings import MonitorError
from hardenml.patch.lineage import PATCH_EVENT, model_section_for
from hardenml.targets import Target, file_sha256, load_target


@dataclass(frozen=True)
class ServedModel:
    """One loaded model version. `version` is what responses, telemetry and metrics show:
    the model's name and the first 12 hex digits of its file's sha256."""

    version: str
    role: str
    sha256: str
    path: Path
    target: Target


def _served(
    config: HardenConfig, events: list[Event], path: Path, sha: str, role: str, *, trust: bool
) -> ServedModel:
    if not path.is_file():
        raise MonitorError(f"the {role} model file {path} does not exist")
    actual = file_sha256(path)
    if actual != sha:
        raise MonitorError(
            f"the {role} model file {path} has sha256 {actual[:12]}, but the ledger records "
            f"{sha[:12]}: it changed after it was recorded; restore it or record it again"
        )
    section = model_section_for(events, config.model, path, sha)
    target = load_target(section, path, trust=trust)
    return ServedModel(f"{config.model.name}@{sha[:12]}", role, sha, path, target)


def released_model(config: HardenConfig, events: list[Event], *, trust: bool) -> ServedModel:
    """The last released version of the configured model."""
    released = last_release(events, config.model.name)
    if released is None:
        raise MonitorError(
            f"no release of {config.model.name!r} is recorded in the ledger; the service "
            "serves released models only: run `hardenml gate` and `hardenml release` first"
        )
    path = config.resolve(Path(released.path))
    return _served(config, events, path, released.model_sha256, "released", trust=trust)


def candidate_model(
    config: HardenConfig, events: list[Event], path: Path, *, trust: bool
) -> ServedModel:
    """The model file at `path` as the blue/green candidate: it must be a released or
    patched artifact of this workspace's ledger."""
    path = config.resolve(path)
    if not path.is_file():
        raise MonitorError(f"monitor.candidate: the file {path} does not exist")
    sha = file_sha256(path)
    known = any(
        (e.kind == RELEASE_EVENT and e.payload.get("model_sha256") == sha)
        or (e.kind == PATCH_EVENT and e.payload.get("artifact_sha256") == sha)
        for e in events
    )
    if not known:
        raise MonitorError(
            f"monitor.candidate: {path.name} (sha256 {sha[:12]}) is neither a released nor a "
            "patched model in the ledger; serve an artifact `hardenml patch` wrote or one "
            "`hardenml release` recorded"
        )
    return _served(config, events, path, sha, "candidate", trust=trust)
