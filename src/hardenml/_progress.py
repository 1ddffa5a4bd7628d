"""Where long work reports how far it got: the ground floor, used by every room.

The CLI passes a rich progress bar on a terminal and plain periodic lines elsewhere (CI
logs); library callers pass nothing and get `SilentProgress`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Progress(Protocol):
    """`task(label, total)` starts a unit of work and returns its `advance(n)` callback."""

    def task(self, label: str, total: int) -> Callable[[int], None]: ...


class SilentProgress:
    """Reports nothing (the library default)."""

    def task(self, label: str, total: int) -> Callable[[int], None]:
        return lambda advance: None
