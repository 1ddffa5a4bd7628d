"""A third-party plugin installed for one test: its module plus a dist-info naming it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest


def install_plugin(
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    module: str,
    source: str,
    group: str,
    entry: str,
) -> None:
    """Write `module.py` with `source` and a distribution whose entry point `entry`
    (`name = module:Class`) lies in `group`, and put `folder` on sys.path, exactly as
    `pip install` of a plugin package would make it visible to `importlib.metadata`."""
    (folder / f"{module}.py").write_text(textwrap.dedent(source))
    dist = module.replace("_", "-")
    info = folder / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{entry}\n")
    monkeypatch.syspath_prepend(str(folder))
