"""Plain data as block YAML, for the model card's front matter, without a YAML library.

Every string is double-quoted (YAML 1.2, section 7.3.1,
https://yaml.org/spec/1.2.2/#731-double-quoted-style) with everything but printable ASCII
escaped (`\\u` with four hex digits, `\\U` with eight), so no value can end the front
matter, start a comment or a document, or be read as another type. `<`, `>` and `&` are
escaped too, so a renderer that shows the front matter (GitHub draws it as a table)
never meets markup in it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

_INDENT = "  "
# Keys written bare: identifiers that YAML 1.1 readers (PyYAML) do not take for a boolean
# or null.
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


def quoted(text: str) -> str:
    out = []
    for char in text:
        code = ord(char)
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif 0x20 <= code < 0x7F and char not in "<>&":
            out.append(char)
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def key(name: str) -> str:
    return name if _PLAIN_KEY.match(name) and name.lower() not in _RESERVED else quoted(name)


def scalar(value: Any) -> str:
    """A YAML scalar; only finite numbers, booleans, None and strings are accepted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"no YAML scalar for the non-finite number {value!r}")
        return repr(value)
    if isinstance(value, str):
        return quoted(value)
    raise TypeError(f"no YAML scalar for {type(value).__name__}")


def dump(data: Mapping[str, Any]) -> str:
    """`data` (mappings with string keys, sequences, scalars) as block YAML."""
    return "\n".join(_mapping(data, 0)) + "\n"


def _mapping(data: Mapping[str, Any], depth: int) -> list[str]:
    pad = _INDENT * depth
    lines: list[str] = []
    for name, value in data.items():
        head = f"{pad}{key(str(name))}:"
        if isinstance(value, Mapping) and value:
            lines += [head, *_mapping(value, depth + 1)]
        elif isinstance(value, Sequence) and not isinstance(value, str) and value:
            lines += [head, *_sequence(value, depth + 1)]
        elif isinstance(value, Mapping):
            lines.append(f"{head} {{}}")
        elif isinstance(value, Sequence) and not isinstance(value, str):
            lines.append(f"{head} []")
        else:
            lines.append(f"{head} {scalar(value)}")
    return lines


def _sequence(items: Sequence[Any], depth: int) -> list[str]:
    pad = _INDENT * depth
    lines: list[str] = []
    for item in items:
        if isinstance(item, Mapping) and item:
            inner = _mapping(item, depth + 1)
            # The first key goes on the dash's line: "- key: value".
            lines.append(f"{pad}- {inner[0].lstrip()}")
            lines += inner[1:]
        elif isinstance(item, Sequence) and not isinstance(item, str) and item:
            lines.append(f"{pad}-")
            lines += _sequence(item, depth + 1)
        elif isinstance(item, Mapping):
            lines.append(f"{pad}- {{}}")
        elif isinstance(item, Sequence) and not isinstance(item, str):
            lines.append(f"{pad}- []")
        else:
            lines.append(f"{pad}- {scalar(item)}")
    return lines
