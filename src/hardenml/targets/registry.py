"""Target kinds by name, through the `hardenml.targets` entry-point group."""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from hardenml.config import ConfigError, ConfigProblem, HardenConfig, ModelConfig, missing_table
from hardenml.targets.base import Target, TargetError
from hardenml.targets.kinds import TargetKind

if TYPE_CHECKING:
    from hardenml.targets.chat_target import ChatModel

GROUP = "hardenml.targets"


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def available_target_kinds() -> list[str]:
    return sorted(_entry_points())


def target_kind(name: str) -> TargetKind:
    """The registered kind `name`, instantiated; `TargetError` if none is registered."""
    eps = _entry_points()
    if name not in eps:
        raise TargetError(f"model.kind {name!r} is not registered; one of {sorted(eps)}")
    cls = eps[name].load()
    if not (isinstance(cls, type) and issubclass(cls, TargetKind)):
        raise TargetError(f"entry point {name!r} of {GROUP} does not name a TargetKind subclass")
    return cls()


def kind_options(model: ModelConfig, *, lines: dict[str, int] | None = None) -> Any:
    """`[model.options]` validated against the kind's schema, or a `ConfigError` per bad key."""
    kind = target_kind(model.kind)
    try:
        return kind.options.model_validate(model.options)
    except ValidationError as exc:
        lines = lines or {}
        problems = []
        for error in exc.errors():
            key = "model.options" + "".join(f".{part}" for part in error["loc"])
            if error["type"] == "extra_forbidden":
                allowed = sorted(kind.options.model_fields)
                expected = f"no such option of model.kind {model.kind!r}: one of {allowed}"
            elif error["type"] == "missing":
                expected = "this option to be set (it is required)"
            else:
                expected = error["msg"].removeprefix("Value error, ")
            value = error.get("input") if error["type"] != "missing" else None
            problems.append(
                ConfigProblem(key, value, expected, lines.get(key) or lines.get("model.options"))
            )
        raise ConfigError(None, problems) from None


def validate_target_config(config: HardenConfig) -> None:
    """Check `[model]` against its kind (options, whether a path is needed) before any work."""
    lines = config.key_lines
    try:
        kind = target_kind(config.model.kind)
    except TargetError as exc:
        raise ConfigError(
            config.source,
            [ConfigProblem("model.kind", config.model.kind, str(exc), lines.get("model.kind"))],
        ) from None
    missing = [
        missing_table(key, f"model.kind {config.model.kind!r} reads it", lines.get(key))
        for key, read, declared in (
            ("model.input", kind.reads_input, config.model.declared_input),
            ("data", kind.reads_data, config.declared_data),
        )
        if read and declared is None
    ]
    if missing:
        raise ConfigError(config.source, missing)
    try:
        kind_options(config.model, lines=lines)
    except ConfigError as exc:
        raise ConfigError(config.source, exc.problems) from None
    if kind.needs_factory and config.model.factory is None:
        raise ConfigError(
            config.source,
            [
                ConfigProblem(
                    "model.factory",
                    None,
                    f"factory = 'package.module:function' (model.kind {config.model.kind!r} "
                    "builds the nn.Module whose weights are in model.path with it)",
                    lines.get("model"),
                )
            ],
        )
    if kind.needs_file and config.model.path is None:
        raise ConfigError(
            config.source,
            [
                ConfigProblem(
                    "model.path",
                    None,
                    f"the model file (model.kind {config.model.kind!r} reads one)",
                    lines.get("model"),
                )
            ],
        )


def load_target(model: ModelConfig, path: Path | None, *, trust: bool = False) -> Target:
    """The model named by `model`; its file at `path` (already resolved) for file kinds."""
    kind = target_kind(model.kind)
    if kind.needs_file:
        if path is None or not path.is_file():
            raise TargetError(
                f"model file {path} does not exist (model.path = {str(model.path)!r})"
            )
        if kind.suffixes and path.suffix.lower() not in kind.suffixes:
            raise TargetError(
                f"model.kind {model.kind!r} reads {' or '.join(kind.suffixes)} files, "
                f"got {path.name}"
            )
    options = kind_options(model)
    return kind.load(model, path if kind.needs_file else None, options, trust=trust)


def model_identity(model: ModelConfig, path: Path | None) -> str:
    """The sha256 that names this model in runs, findings and releases (see
    `TargetKind.identity`): a file's hash, or what an endpoint kind derives."""
    kind = target_kind(model.kind)
    if kind.needs_file and (path is None or not path.is_file()):
        raise TargetError(f"model file {path} does not exist (model.path = {str(model.path)!r})")
    return kind.identity(model, path if kind.needs_file else None, kind_options(model))


def is_chat_kind(model: ModelConfig) -> bool:
    """Whether `model.kind` is a chat model (a `ChatKind`), scanned with prompt threats."""
    from hardenml.targets.chat_target import ChatKind

    return isinstance(target_kind(model.kind), ChatKind)


def load_chat_model(model: ModelConfig) -> ChatModel:
    """The chat model named by `model` (a `model.kind` registered as a `ChatKind`)."""
    from hardenml.targets.chat_target import ChatKind

    kind = target_kind(model.kind)
    if not isinstance(kind, ChatKind):
        raise TargetError(
            f"model.kind {model.kind!r} is not a chat model; prompt threats need one "
            "(model.kind = 'chat')"
        )
    return kind.connect(kind_options(model))
