"""Contract suite over every registered report format, and a third-party format by entry point.

Each format renders a real gate decision (the digits MLP scanned and gated, with hostile
names in the config) and must: write its file atomically, parse as what it claims to be,
and never carry a hostile name unescaped.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from tests.plugin_support import install_plugin
from tests.test_reports_support import MODEL, OWNER, PROJECT, Gated, gated_workspace
from torch import nn

from hardenml.report import bundle, registry
from hardenml.report.registry import ReportContext, available_reports, report_format

HOSTILE = (PROJECT, OWNER, MODEL)


@pytest.fixture(scope="module")
def gated(digits_mlp: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Gated:
    return gated_workspace(tmp_path_factory.mktemp("contract"), digits_mlp)


def _context(gated: Gated) -> ReportContext:
    return ReportContext(config=gated.ws.config, decision=gated.decision, findings=gated.findings)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


def _parses(media_type: str, text: str) -> None:
    if media_type.endswith("json"):
        json.loads(text)
    elif media_type.endswith("xml"):
        ET.fromstring(text)
    elif media_type == "text/html":
        parser = _Tags()
        parser.feed(text)
        assert "html" in parser.tags and "script" not in parser.tags
    else:
        assert text.strip()


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_the_built_in_formats_are_registered() -> None:
    assert {"json", "junit", "sarif", "html", "model_card"} <= set(available_reports())


@pytest.mark.parametrize("name", available_reports())
def test_every_format_writes_parses_and_escapes(name: str, gated: Gated, tmp_path: Path) -> None:
    fmt = report_format(name)
    assert fmt.filename and "/" not in fmt.filename
    path = fmt.write(tmp_path, _context(gated))
    assert path == tmp_path / fmt.filename and path.stat().st_size > 100
    assert not list(tmp_path.glob("*.tmp")), "written atomically"
    text = path.read_text(encoding="utf-8")
    _parses(fmt.media_type, text)
    if fmt.media_type != "text/markdown":
        # JSON escapes nothing of these names, so check what matters there: a hostile name
        # is a string value, never markup; in XML and HTML it must never appear raw.
        if fmt.media_type.endswith("json"):
            strings = _strings(json.loads(text))
            assert any(MODEL in value for value in strings), "the model's name, as a string"
        else:
            for name_ in HOSTILE:
                assert name_ not in text, f"{name} carries {name_!r} unescaped"


@pytest.mark.parametrize("name", available_reports())
def test_every_format_renders_the_same_decision_the_same_way(name: str, gated: Gated) -> None:
    fmt = report_format(name)
    first, second = fmt.render(_context(gated)), fmt.render(_context(gated))
    assert first == second


PLUGIN = """
from hardenml.report import ReportFormat


class CsvChecks(ReportFormat):
    filename = "checks.csv"
    media_type = "text/csv"

    def render(self, context):
        rows = ["check,passed"]
        rows += [f"{c.name},{c.passed}" for c in context.decision.checks]
        return "\\n".join(rows) + "\\n"
"""


@pytest.fixture
def plugin_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A third-party report format installed for this test, registered by entry point."""
    install_plugin(
        tmp_path,
        monkeypatch,
        module="hardenml_report_plugin",
        source=PLUGIN,
        group="hardenml.reports",
        entry="csv = hardenml_report_plugin:CsvChecks",
    )
    registry._entry_points.cache_clear()
    yield
    registry._entry_points.cache_clear()


def test_third_party_format_is_written_by_the_gate_bundle(
    plugin_on_path: None, gated: Gated, tmp_path: Path
) -> None:
    written = bundle.write_all_reports(
        tmp_path, gated.ws.config, gated.decision, findings=gated.findings
    )
    assert "csv" in written
    lines = (tmp_path / "checks.csv").read_text().splitlines()
    assert lines[0] == "check,passed" and len(lines) == 1 + len(gated.decision.checks)
