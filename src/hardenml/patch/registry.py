"""Patches by name, through the `hardenml.patches` entry-point group.

Built-in defences register in our own pyproject.toml exactly as a third-party package
would, and are imported only when asked for.
"""

from __future__ import annotations

import inspect
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from hardenml.patch.base import Patch, PatchError

GROUP = "hardenml.patches"


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def available_patches() -> list[str]:
    return sorted(_entry_points())


def patch_class(name: str) -> type[Patch]:
    eps = _entry_points()
    if name not in eps:
        raise PatchError(f"no patch named {name!r}; registered patches: {sorted(eps)}")
    cls = eps[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Patch)):
        raise PatchError(f"entry point {name!r} does not name a Patch subclass")
    return cls


def remedies_for(kind: str, family: str) -> list[tuple[str, str]]:
    """(name, summary) of every registered patch that addresses threats of `family` and
    patches models of `kind`, in name order: what a finding can honestly propose."""
    out = []
    for name in available_patches():
        cls = patch_class(name)
        if family in cls.addresses and kind in cls.kinds:
            out.append((name, cls.summary or name))
    return out


def patch_parameters(name: str) -> dict[str, Any]:
    """Keyword-only parameters of a patch and their defaults."""
    sig = inspect.signature(patch_class(name).__init__)
    return {p.name: p.default for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY}


def make_patch(name: str, params: dict[str, Any] | None = None) -> Patch:
    """Build a registered patch; an unknown or ill-typed parameter is a `PatchError`."""
    params = dict(params or {})
    allowed = patch_parameters(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise PatchError(f"patch {name!r} has no parameter {unknown}; it takes {sorted(allowed)}")
    try:
        return patch_class(name)(**params)
    except (TypeError, ValueError) as exc:
        raise PatchError(f"patch {name!r}: {exc}") from None
