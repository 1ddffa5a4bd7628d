"""Threats by name, through the `hardenml.threats` entry-point group.

Built-in threats register in our own pyproject.toml exactly as a third-party package
would, and are imported only when asked for.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from hardenml.config import ConfigError, ConfigProblem, HardenConfig, ThreatConfig
from hardenml.targets import Target, TargetError
from hardenml.threats.base import Threat
from hardenml.threats.parameters import ThreatParameterError, parameter_problems

GROUP = "hardenml.threats"


class ThreatLookupError(LookupError):
    pass


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def available_threats() -> list[str]:
    return sorted(_entry_points())


def threat_class(name: str) -> type[Threat]:
    eps = _entry_points()
    if name not in eps:
        raise ThreatLookupError(f"one of the registered attacks {sorted(eps)}")
    cls = eps[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Threat)):
        raise ThreatLookupError(f"entry point {name!r} does not name a Threat subclass")
    return cls


def gradient_free_threats() -> list[str]:
    """Registered threats that run on a classifier without input gradients (scores, labels
    or none), by name; prompt probes (which need a chat model) and a plugin that fails to
    load are left out."""
    names = []
    for name in available_threats():
        try:
            cls = threat_class(name)
            if not cls.needs_gradients and cls.family != "prompt":
                names.append(name)
        except Exception:  # a broken third-party plugin
            continue
    return names


def _family(name: str) -> str | None:
    try:
        return threat_class(name).family
    except Exception:  # a broken third-party plugin
        return None


def check_access(target: Target, threats: Mapping[str, Threat]) -> None:
    """Refuse, before any work, threats that need what `target` does not give: the error
    names the declared threats that need gradients and the registered ones that apply.
    A text model (`input_spec.modality == "text"`) takes only text threats, and text
    threats take only text models: their inputs are strings, not tensors."""
    text_model = target.input_spec.modality == "text"
    mismatched = sorted(
        name for name, threat in threats.items() if (threat.family == "text") != text_model
    )
    if mismatched:
        text_threats = [n for n in available_threats() if _family(n) == "text"]
        raise TargetError(
            f"the threats {mismatched} cannot run on this model: "
            + (
                "it reads strings, and only text threats edit strings "
                f"({', '.join(text_threats)}). Replace those in [[threats]]"
                if text_model
                else "they edit strings, and this model reads tensors. Remove them from [[threats]]"
            )
        )
    if target.has_gradients:
        return
    needing = sorted(name for name, threat in threats.items() if threat.needs_gradients)
    if needing:
        raise TargetError(
            f"{target.no_gradients_reason}, so the threats {needing} (they need input "
            "gradients) cannot run on it. Threats that need only scores or labels do: "
            f"{', '.join(gradient_free_threats())}. Replace those in [[threats]]"
        )


def threat_parameters(name: str) -> set[str]:
    sig = inspect.signature(threat_class(name).__init__)
    return {p.name for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY}


def make_threat(cfg: ThreatConfig) -> Threat:
    return threat_class(cfg.attack)(**cfg.params)


def validate_threats(config: HardenConfig) -> dict[str, Threat]:
    """Build every declared threat, or raise one `ConfigError` naming each bad key.

    Parameters are checked against the constructor's annotations before it runs (a wrong
    type names `threats[i].PARAM`); a constructor that refuses one parameter says which
    through `ThreatParameterError`.
    """
    lines = config.key_lines
    problems: list[ConfigProblem] = []
    built: dict[str, Threat] = {}
    for i, threat in enumerate(config.threats):
        key = f"threats[{i}]"
        try:
            allowed = threat_parameters(threat.attack)
        except ThreatLookupError as exc:
            problems.append(
                ConfigProblem(f"{key}.attack", threat.attack, str(exc), lines.get(f"{key}.attack"))
            )
            continue
        unknown = [p for p in threat.params if p not in allowed]
        for param in unknown:
            problems.append(
                ConfigProblem(
                    f"{key}.{param}",
                    threat.params[param],
                    f"a parameter of attack {threat.attack!r}: one of {sorted(allowed)}",
                    lines.get(f"{key}.{param}"),
                )
            )
        mistyped = parameter_problems(threat_class(threat.attack).__init__, threat.params)
        for param, expected in mistyped.items():
            problems.append(
                ConfigProblem(
                    f"{key}.{param}", threat.params[param], expected, lines.get(f"{key}.{param}")
                )
            )
        if unknown or mistyped:
            continue
        try:
            built[threat.name] = make_threat(threat)
        except ThreatParameterError as exc:
            name = f"{key}.{exc.parameter}"
            problems.append(ConfigProblem(name, exc.value, exc.expected, _line(lines, name)))
        except (TypeError, ValueError) as exc:
            problems.append(ConfigProblem(key, _shown(threat.params), str(exc), lines.get(key)))
    if problems:
        raise ConfigError(config.source, problems)
    return built


def _line(lines: dict[str, int], key: str) -> int | None:
    """The line of `key`, or of the nearest table above it that the file shows (a key
    inside an inline table has no line of its own)."""
    while key:
        if key in lines:
            return lines[key]
        key = key.rpartition(".")[0]
    return None


def _shown(params: dict[str, Any]) -> dict[str, Any]:
    return dict(sorted(params.items()))
