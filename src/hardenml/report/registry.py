"""Report formats by name, through the `hardenml.reports` entry-point group.

A format is a `ReportFormat` subclass: a file name and `render(context) -> text`. Built-in
formats register in our own pyproject.toml exactly as a third-party package would; the
gate writes every registered format side by side into the reports folder.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, ClassVar

from hardenml.config import HardenConfig
from hardenml.gate import GateDecision
from hardenml.report.calibration import Reliability
from hardenml.report.common import Findings, atomic_write

GROUP = "hardenml.reports"


class ReportLookupError(LookupError):
    pass


@dataclass(frozen=True)
class ReportContext:
    """Everything a report may show, read once: the decision, the ledger's findings, the
    model it is compared with, the reliability bins, and the repository root for URIs."""

    config: HardenConfig
    decision: GateDecision
    findings: Findings | None = None
    baseline: Mapping[str, Any] | None = None
    reliability: Reliability | None = None
    repo_root: Path | None = None


class ReportFormat(ABC):
    """One report format. `filename` is its name in the reports folder; `media_type` is
    what a server or CI artifact store should call it."""

    filename: ClassVar[str]
    media_type: ClassVar[str] = "text/plain"
    description: ClassVar[str] = ""

    @abstractmethod
    def render(self, context: ReportContext) -> str:
        """The report's text. Pure: reads no files, and escapes everything it embeds."""

    def write(self, folder: Path, context: ReportContext) -> Path:
        """Render and write atomically to `folder / filename`."""
        return atomic_write(folder / self.filename, self.render(context))


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def available_reports() -> list[str]:
    return sorted(_entry_points())


def report_format(name: str) -> ReportFormat:
    eps = _entry_points()
    if name not in eps:
        raise ReportLookupError(f"no report format {name!r}; registered: {sorted(eps)}")
    cls = eps[name].load()
    if not (isinstance(cls, type) and issubclass(cls, ReportFormat)):
        raise ReportLookupError(f"entry point {name!r} of {GROUP} is not a ReportFormat")
    return cls()
