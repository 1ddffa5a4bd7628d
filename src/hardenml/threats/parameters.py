"""Attack parameters from the config, checked against the constructor they are passed to.

A threat's keys beyond `name`, `attack`, `budgets` and `batch_size` reach its constructor
as keyword arguments. They come from TOML, so they hold only booleans, integers, floats,
strings, lists and tables; each is compared with the constructor's annotation (`int`,
`float`, `bool`, `str`, `Literal`, unions, sequences, tuples, mappings) before anything is
built, so that `steps = 10.5` or `steps = "ten"` is a config error naming the key, not a
comparison failing deep inside the attack. A float must be finite. An annotation this
does not know (a tensor, an estimator) accepts any value: the constructor judges those.
"""

from __future__ import annotations

import inspect
import math
import operator
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from functools import reduce
from typing import Any, Literal, Union

_NAMES: dict[str, Any] = {"int": int, "float": float, "bool": bool, "str": str, "None": None}


class ThreatParameterError(ValueError):
    """One parameter of a threat is unusable: which one (dotted below the threat, such as
    `art_params.max_iter`), the value given and what was expected."""

    def __init__(self, parameter: str, value: Any, expected: str) -> None:
        self.parameter = parameter
        self.value = value
        self.expected = expected
        super().__init__(f"{parameter} = {value!r}: expected {expected}")


def parameter_problems(func: Callable[..., Any], params: Mapping[str, Any]) -> dict[str, str]:
    """What was expected, by parameter, for each value in `params` that does not fit the
    annotation of that parameter of `func` (parameters `func` lacks are not judged here)."""
    hints = annotations_of(func)
    out = {}
    for name, value in params.items():
        expected = mismatch(hints.get(name, Any), value)
        if expected is not None:
            out[name] = expected
    return out


def annotations_of(func: Callable[..., Any]) -> dict[str, Any]:
    """The resolved annotations of `func`'s parameters. Where a module names types only
    for type checkers (ART's `CLASSIFIER_TYPE` aliases), each string annotation is read as
    a union of the builtin names it spells, and as `Any` when it spells anything else."""
    try:
        return typing.get_type_hints(func)
    except Exception:  # NameError, TypeError: names that exist only under TYPE_CHECKING
        params = inspect.signature(func).parameters.values()
        return {p.name: _spelled(p.annotation) for p in params}


def _spelled(annotation: Any) -> Any:
    if annotation is inspect.Parameter.empty:
        return Any
    if not isinstance(annotation, str):
        return annotation
    parts = [part.strip() for part in annotation.split("|")]
    if not all(part in _NAMES for part in parts):
        return Any
    return reduce(operator.or_, (type(None) if p == "None" else _NAMES[p] for p in parts))


def mismatch(annotation: Any, value: Any) -> str | None:
    """None when `value` fits `annotation`, else what would fit, in words."""
    if annotation is Any or annotation is object or annotation is inspect.Parameter.empty:
        return None
    if annotation is None or annotation is type(None):
        return None if value is None else "nothing (leave the key out)"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Union or origin is types.UnionType:
        wanted = [mismatch(arg, value) for arg in args if arg is not type(None)]
        if any(w is None for w in wanted) or (value is None and type(None) in args):
            return None
        return " or ".join(w for w in wanted if w)
    if origin is Literal:
        ok = any(value == arg and type(value) is type(arg) for arg in args)
        return None if ok else f"one of {list(args)}"
    if annotation is bool:
        return None if isinstance(value, bool) else "true or false (bool)"
    if annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else "a whole number (int), written without a decimal point"
    if annotation is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok and math.isfinite(value) else "a finite number (float)"
    if annotation is str:
        return None if isinstance(value, str) else "a string (str)"
    if origin is tuple and args and args[-1] is not Ellipsis:
        return _fixed_tuple(args, value)
    if origin is tuple or _is_sequence(origin or annotation):
        item = args[0] if args else Any
        return _sequence(item, value)
    if _is_mapping(origin or annotation):
        return _mapping(args[1] if len(args) == 2 else Any, value)
    return None  # a type TOML cannot spell: the constructor judges the value


def _is_sequence(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, Sequence) and not issubclass(kind, str)


def _is_mapping(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, Mapping)


def _sequence(item: Any, value: Any) -> str | None:
    if not isinstance(value, list | tuple):
        return f"a list of {_plural(item)}"
    for i, element in enumerate(value):
        wrong = mismatch(item, element)
        if wrong is not None:
            return f"a list of {_plural(item)} (item [{i}] = {element!r} is not {wrong})"
    return None


def _fixed_tuple(items: tuple[Any, ...], value: Any) -> str | None:
    if not isinstance(value, list | tuple) or len(value) != len(items):
        return f"a list of {len(items)} values"
    for i, (item, element) in enumerate(zip(items, value, strict=True)):
        wrong = mismatch(item, element)
        if wrong is not None:
            return f"a list of {len(items)} values whose item [{i}] is {wrong}"
    return None


def _mapping(item: Any, value: Any) -> str | None:
    if not isinstance(value, dict):
        return "a table (`{ key = value, ... }`)"
    for key, element in value.items():
        wrong = mismatch(item, element)
        if wrong is not None:
            return f"a table whose value {key!r} is {wrong}"
    return None


def _plural(item: Any) -> str:
    """`a list of ...` for an item type: "integers", "lists of integers", "values"."""
    words = {int: "whole numbers", float: "finite numbers", bool: "booleans", str: "strings"}
    if item in words:
        return words[item]
    origin = typing.get_origin(item)
    if origin is tuple or _is_sequence(origin or item):
        inner = typing.get_args(item)
        return f"lists of {_plural(inner[0] if inner else Any)}"
    return "values"
