"""A chat model's patches as an artifact: the guard file.

A patched chat model is the deployed model behind a chain of guards, so its artifact is
the chain, written as JSON (`{"format": "hardenml.chat-guards/1", "guards": [{"patch":
name, "params": {...}}, ...]}`, innermost first) and addressed by its sha256 like every
artifact. `[model] path` of a chat config may name one: the model is then scanned, gated
and released behind those guards.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hardenml.patch.base import PatchError
from hardenml.patch.chat import ChatPatch
from hardenml.patch.registry import make_patch
from hardenml.targets import ChatModel

GUARDS_FORMAT = "hardenml.chat-guards/1"
GUARDS_SUFFIX = ".guards.json"


@dataclass(frozen=True)
class Guard:
    patch: str
    params: dict[str, Any] = field(default_factory=dict)


def read_guards(path: Path) -> list[Guard]:
    """The guards a guard file lists, or a `PatchError` naming the file and the problem."""
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise PatchError(f"guard file {path} cannot be read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PatchError(f"guard file {path} is not JSON ({exc})") from None
    guards = data.get("guards") if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or data.get("format") != GUARDS_FORMAT
        or not isinstance(guards, list)
    ):
        raise PatchError(
            f"guard file {path}: expected {{'format': {GUARDS_FORMAT!r}, 'guards': [...]}}, "
            "as `hardenml patch` writes for a chat model"
        )
    out = []
    for i, guard in enumerate(guards):
        ok = isinstance(guard, dict) and isinstance(guard.get("patch"), str)
        if not ok or not isinstance(guard.get("params", {}), dict):
            raise PatchError(
                f"guard file {path}: guards[{i}] must be {{'patch': str, 'params': {{}}}}"
            )
        out.append(Guard(guard["patch"], dict(guard.get("params", {}))))
    return out


def write_guards(folder: Path, stem: str, guards: list[Guard]) -> tuple[Path, str]:
    """Write `guards` to `folder/<stem>-<sha12>.guards.json`; return (path, sha256)."""
    blob = json.dumps(
        {"format": GUARDS_FORMAT, "guards": [asdict(g) for g in guards]}, indent=1, sort_keys=True
    ).encode()
    sha = hashlib.sha256(blob).hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}-{sha[:12]}{GUARDS_SUFFIX}"
    path.write_bytes(blob)
    return path, sha


def chat_patch(name: str, params: dict[str, Any] | None = None) -> ChatPatch:
    """The registered patch `name`, which must guard chat models."""
    defence = make_patch(name, params)
    if not isinstance(defence, ChatPatch):
        raise PatchError(
            f"patch {name!r} patches {', '.join(type(defence).kinds)} models, not chat models; "
            "the chat patches are chat-input-sanitizer and chat-output-filter"
        )
    return defence


def guarded(model: ChatModel, guards: list[Guard]) -> ChatModel:
    """`model` behind each guard in turn (the first listed sits closest to the model)."""
    for guard in guards:
        model = chat_patch(guard.patch, guard.params).wrap(model)
    return model
