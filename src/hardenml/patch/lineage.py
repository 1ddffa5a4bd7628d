"""Patched-model artifacts, their lineage events, and pointing a config at one.

Every patch writes a new artifact named by its sha256, in the form the model's kind
writes (`TargetKind.save`: safetensors for pytorch, a TorchScript file, skops for
scikit-learn), and a `model.patched` ledger event: the parent model's hash, the training
data's hash, the patch and its parameters, the seed, the metrics, and how to load the
artifact (kind, factory, factory_kwargs). `hardenml validate` finds that event by the
artifact's hash to load a candidate the way it was built.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

from hardenml.config import ModelConfig
from hardenml.ledger import Event
from hardenml.patch.base import PatchError, PatchResult
from hardenml.records import MODEL_PATCHED, ModelPatched
from hardenml.targets import TargetError, file_sha256, target_kind

PATCH_EVENT = MODEL_PATCHED


def write_artifact(result: PatchResult, kind: str, folder: Path, stem: str) -> tuple[Path, str]:
    """Write the patched model as model.kind `kind` writes its models, to
    `folder/<stem>-<sha12><suffix>`; return (path, sha256)."""
    writer = target_kind(kind)
    suffix = writer.artifact_suffix
    if suffix is None:
        raise PatchError(f"model.kind {kind!r} cannot write a patched model to a file")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{stem}{suffix}.tmp"
    try:
        writer.save(result.target, tmp)
    except TargetError as exc:
        tmp.unlink(missing_ok=True)
        raise PatchError(f"cannot write the patched model: {exc}") from None
    sha = file_sha256(tmp)
    path = folder / f"{stem}-{sha[:12]}{suffix}"
    tmp.replace(path)
    return path, sha


def lineage_for(events: list[Event], sha256: str) -> ModelPatched | None:
    """The latest `model.patched` record whose artifact has this hash, if any."""
    for event in reversed(events):
        if event.kind == PATCH_EVENT and event.payload.get("artifact_sha256") == sha256:
            return ModelPatched.from_payload(event.payload)
    return None


def recorded_privacy(events: list[Event], sha256: str) -> dict[str, Any] | None:
    """The differential-privacy guarantee the lineage of this model file records (the
    `metrics.privacy` of a dp_sgd patch), or None."""
    lineage = lineage_for(events, sha256)
    metrics = {} if lineage is None else lineage.extra.get("metrics") or {}
    privacy = metrics.get("privacy")
    return dict(privacy) if isinstance(privacy, dict) else None


def model_section_for(
    events: list[Event], base: ModelConfig, path: Path, sha256: str
) -> ModelConfig:
    """How to load the model file at `path`: as its lineage event says, else as `base`."""
    lineage = lineage_for(events, sha256)
    update: dict[str, Any] = {"path": path}
    if lineage is not None:
        model = lineage.model
        update.update(
            kind=model["kind"], factory=model["factory"], factory_kwargs=model["factory_kwargs"]
        )
    return base.model_copy(update=update)


def toml_value(value: Any) -> str:
    """A TOML literal for a JSON-like value (inline tables for dicts)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value) if isinstance(value, str) else value.as_posix())
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        body = ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items())
        return "{ " + body + " }" if body else "{}"
    raise PatchError(f"cannot write {type(value).__name__} value {value!r} to TOML")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


_HEADER = re.compile(r"^\s*\[")
_MODEL = re.compile(r"^\s*\[\s*model\s*\]\s*(#.*)?$")
_SUBTABLE = re.compile(r"^\s*\[\s*model\s*\.\s*(\w+)\s*\]\s*(#.*)?$")


def rewrite_model_section(text: str, updates: dict[str, Any]) -> str:
    """Set keys of the `[model]` table in a config's text, keeping everything else
    (comments included). A `[model.KEY]` sub-table for an updated KEY is replaced by an
    inline value."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if _MODEL.match(line)), None)
    if start is None:
        raise PatchError("the config has no [model] table to point at the new model")
    # Drop sub-tables that an update replaces.
    out: list[str] = []
    skipping = False
    for line in lines:
        sub = _SUBTABLE.match(line)
        if sub:
            skipping = sub.group(1) in updates
        elif _HEADER.match(line):
            skipping = False
        if not skipping:
            out.append(line)
    lines = out
    start = next(i for i, line in enumerate(lines) if _MODEL.match(line))
    end = next((i for i in range(start + 1, len(lines)) if _HEADER.match(lines[i])), len(lines))
    for key, value in updates.items():
        pattern = re.compile(rf"^(\s*){re.escape(key)}\s*=")
        new = f"{key} = {toml_value(value)}"
        hit = next((i for i in range(start + 1, end) if pattern.match(lines[i])), None)
        if hit is not None:
            indent = pattern.match(lines[hit]).group(1)  # type: ignore[union-attr]
            lines[hit] = indent + new + _comment(lines[hit]) + "\n"
            continue
        last = max(
            (
                i
                for i in range(start + 1, end)
                if lines[i].strip() and not lines[i].lstrip().startswith("#")
            ),
            default=start,
        )
        lines.insert(last + 1, new + "\n")
        end += 1
    result = "".join(lines)
    try:
        parsed = tomllib.loads(result)["model"]
    except (tomllib.TOMLDecodeError, KeyError) as exc:
        raise PatchError(f"rewriting [model] produced an unreadable config: {exc}") from None
    for key, value in updates.items():
        if parsed.get(key) != json.loads(json.dumps(value, default=str)):
            raise PatchError(f"could not set model.{key} in the config; edit it by hand")
    return result


def _comment(line: str) -> str:
    """The trailing comment of a `key = value  # comment` line, with its spacing."""
    body = line.rstrip("\n")
    for i in (m.start() for m in re.finditer("#", body)):
        try:
            tomllib.loads(body[:i])
        except tomllib.TOMLDecodeError:
            continue
        stripped = body[:i].rstrip()
        return body[len(stripped) :]
    return ""
