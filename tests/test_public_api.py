"""The public API: a sorted `__all__` that matches exactly what each package exports."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import hardenml

PACKAGES = [
    "hardenml",
    "hardenml.targets",
    "hardenml.threats",
    "hardenml.scan",
    "hardenml.executors",
    "hardenml.ledger",
    "hardenml.gate",
    "hardenml.report",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_matches_exports(name: str):
    module = importlib.import_module(name)
    exported = module.__all__
    assert exported == sorted(exported)
    public = {
        n
        for n, v in vars(module).items()
        if not n.startswith("_")
        and not isinstance(v, type(pkgutil))
        and getattr(v, "__module__", "").startswith("hardenml")
    }
    assert public <= set(exported) | {"annotations"}, (
        f"exported but not in __all__: {public - set(exported)}"
    )
    for item in exported:
        assert hasattr(module, item), f"{name}.__all__ lists missing {item}"


def test_version():
    assert hardenml.__version__ == "0.1.0"
