"""The HTML page's view and its charts: hostile names stay text in the SVG and the page,
the evidence wording says what its numbers count, and calibration is one compact figure
with bin counts and no empty diagram."""

from __future__ import annotations

import dataclasses
import re
import shutil
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from itertools import pairwise
from pathlib import Path

import pytest
from torch import nn

from hardenml.config import HardenConfig, parse_config
from hardenml.gate import GateDecision, decide
from hardenml.ledger import FindingState, RunRecord
from hardenml.report import HTML_NAME, ReliabilityBin, html_report
from hardenml.report.html_examples import FlipCount, flip_count
from hardenml.report.svg import (
    FULL,
    Mark,
    Point,
    Series,
    line_chart,
    reliability_chart,
    short_count,
)
from hardenml.scan import proportion
from hardenml.scan.scanner import EVIDENCE_PER_THREAT
from test_reports_support import Gated, gated_workspace

HOSTILE_THREAT = "pgd\"><script>alert('threat')</script>"
HOSTILE_MODEL = "m'\"><svg onload=alert(5)>"
HOSTILE_FINDING = "HML-\"><script>alert('finding')</script>"
HOSTILE_LABEL = '<script>alert("label")</script>\''


@pytest.fixture(scope="module")
def tabular(digits_mlp: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Gated:
    return gated_workspace(tmp_path_factory.mktemp("view"), digits_mlp)


def _svg_tree(svg: str) -> ET.Element:
    """The chart parsed as XML: a string that escaped its text or attribute would either
    break the parse or show up as an element or attribute of its own."""
    return ET.fromstring(svg)


def _assert_inert(root: ET.Element) -> None:
    for element in root.iter():
        assert element.tag != "script"
        assert not [name for name in element.attrib if name.lower().startswith("on")]


def test_svg_keeps_every_hostile_string_inside_its_text_or_attribute() -> None:
    colour = 'red" onload="alert(6)'
    chart = line_chart(
        plot_id=HOSTILE_LABEL,
        title=HOSTILE_THREAT,
        x_label=HOSTILE_LABEL,
        y_label=HOSTILE_LABEL,
        series=[Series(HOSTILE_MODEL, [Point(0.0, 0.9, 0.8, 1.0), Point(0.1, 0.5)], colour)],
        marks=[Mark(0.1, 0.9, HOSTILE_FINDING)],
    )
    root = _svg_tree(chart)
    _assert_inert(root)
    assert root.get("data-plot") == HOSTILE_LABEL
    assert root.find("title").text == HOSTILE_THREAT  # type: ignore[union-attr]
    (series,) = (g for g in root.iter("g") if g.get("class") == "series")
    assert series.get("data-series") == HOSTILE_MODEL and series.get("stroke") == colour
    legend_line = next(g for g in root.iter("g") if g.get("class") == "legend").find("line")
    assert legend_line is not None and legend_line.get("stroke") == colour
    mark = next(e for e in root.iter("line") if e.get("class") == "required")
    assert mark.find("title").text == HOSTILE_FINDING  # type: ignore[union-attr]
    texts = {e.text for e in root.iter("text")}
    assert {HOSTILE_THREAT, HOSTILE_LABEL, HOSTILE_MODEL} <= texts

    bins = [ReliabilityBin(0.5, 1.0, 0.8, 0.75, 4)]
    panel = _svg_tree(reliability_chart(plot_id=HOSTILE_LABEL, title=HOSTILE_THREAT, bins=bins))
    _assert_inert(panel)
    assert panel.find("title").text == f"{HOSTILE_THREAT} (ECE 0.050)"  # type: ignore[union-attr]


HOSTILE_CONFIG = """\
version = 1
[project]
name = '<script>alert("project")</script>'
[model]
name = '''{model}'''
kind = "sklearn"
path = "m.skops"
classes = ["a", "b"]
[model.input]
shape = [4]
[data]
source = "digits"
"""


def _hostile_decision(tmp_path: Path) -> tuple[HardenConfig, GateDecision, FindingState]:
    """A run of a hostile-named model with a hostile-named threat, and an open finding with
    hostile names whose evidence file is missing (so its path is shown as text)."""
    config = parse_config(HOSTILE_CONFIG.format(model=HOSTILE_MODEL), root=tmp_path)
    ms = [
        proportion("clean_accuracy", 90, 100, confidence=0.95, seed=0),
        proportion(
            "robust_accuracy", 40, 100, threat=HOSTILE_THREAT, budget=0.1, confidence=0.95, seed=0
        ),
    ]
    payload = {
        "run_id": "r1", "model": HOSTILE_MODEL, "model_sha256": "a" * 64, "data_sha256": "b" * 64,
        "seed": 0, "n": 100, "measurements": [m.as_dict() for m in ms],
    }  # fmt: skip
    decision = decide(config, RunRecord("r1", HOSTILE_MODEL, "a" * 64, payload, 1), {})
    finding = FindingState(
        finding_id=HOSTILE_FINDING,
        fingerprint="f" * 16,
        title=f"Robust accuracy under {HOSTILE_THREAT} is 40%",
        model=HOSTILE_MODEL,
        threat=HOSTILE_THREAT,
        metric="robust_accuracy",
        budget=0.1,
        severity="high",
        status="open",
        owner=HOSTILE_LABEL,
        due="2026-01-01",
        value=0.4,
        threshold=0.9,
        ci=(0.3, 0.5),
        n=100,
        exploitation="",
        remediation=HOSTILE_LABEL,
        evidence=[{"kind": "adversarial_examples", "path": f"{HOSTILE_THREAT}.npz"}],
        opened="2026-01-01T00:00:00+00:00",
    )
    return config, decision, finding


class _PageParts(HTMLParser):
    """Start tags, attribute names and the text a browser would show, entities decoded."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend(attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_page_shows_hostile_threat_model_finding_and_label_names_as_text(
    tmp_path: Path,
) -> None:
    config, decision, finding = _hostile_decision(tmp_path)
    bins = [ReliabilityBin(0.0, 0.5, 0.4, 0.25, 4), ReliabilityBin(0.5, 1.0, 0.8, 0.75, 4)]
    page = html_report(config, decision, [finding], reliability={HOSTILE_LABEL: bins})
    parts = _PageParts()
    parts.feed(page)
    assert "script" not in parts.tags
    assert not [name for name, _ in parts.attributes if name.startswith("on")]
    text = "".join(parts.text)
    for hostile in (HOSTILE_THREAT, HOSTILE_MODEL, HOSTILE_FINDING, HOSTILE_LABEL):
        assert hostile in text, hostile
    # The robust curve's title and the reliability panel's title are SVG text.
    assert f"robust accuracy: {HOSTILE_THREAT}" in text
    assert f"{HOSTILE_LABEL} (ECE 0.100)" in text
    # Attributes hold hostile values whole, quotes and all.
    assert ("data-finding-id", HOSTILE_FINDING) in parts.attributes
    assert ("data-series", f"candidate {HOSTILE_MODEL}") in parts.attributes


def test_evidence_says_how_many_inputs_the_attack_flipped_and_how_many_were_kept(
    tabular: Gated,
) -> None:
    decision = tabular.decision
    finding = decision.blocking_findings[0]
    clean = decision.run.payload["measurements"][0]
    robust = next(
        m
        for m in decision.run.payload["measurements"]
        if m["metric"] == "robust_accuracy" and m["budget"] == finding.budget
    )
    n = clean["n"]
    correct_before = round(clean["value"] * n)
    flipped = correct_before - round(robust["value"] * n)
    kept = finding.evidence[0]["count"]
    # The scanner keeps every input it flipped, up to its cap: the page's count is the
    # scanner's own, not another estimate.
    assert kept == min(flipped, EVIDENCE_PER_THREAT)
    assert flip_count(decision, finding) == FlipCount(
        flipped, correct_before, n, decision.run.run_id
    )
    page = (tabular.reports / HTML_NAME).read_text()
    assert (
        f"the attack flipped {flipped} of the {correct_before} inputs the model classified "
        f"correctly (n = {n}). {kept} of the flipped examples are kept as evidence, "
        f"{min(kept, 8)} shown" in page
    )
    assert "inputs the attack flipped," not in page


def test_evidence_without_the_runs_measurement_only_counts_what_was_kept(
    tabular: Gated,
) -> None:
    payload = dict(tabular.decision.run.payload)
    payload["measurements"] = [m for m in payload["measurements"] if m["threat"] is None]
    run = dataclasses.replace(tabular.decision.run, payload=payload)
    decision = decide(tabular.ws.config, run, {})
    finding = tabular.decision.blocking_findings[0]
    assert flip_count(decision, finding) is None
    page = html_report(tabular.ws.config, decision, tabular.findings)
    kept = finding.evidence[0]["count"]
    paragraph = re.search(r'<p class="evidence-count">(.*?)</p>', page)
    assert paragraph is not None
    assert paragraph.group(1).startswith(f"{kept} examples kept as evidence, {min(kept, 8)} shown")
    assert "flipped" not in paragraph.group(1)


def test_flip_count_needs_a_robust_accuracy_that_is_a_proportion_of_the_same_n(
    tmp_path: Path,
) -> None:
    _, decision, finding = _hostile_decision(tmp_path)
    assert flip_count(decision, finding) == FlipCount(50, 90, 100, "r1")
    assert flip_count(decision, dataclasses.replace(finding, metric="ece")) is None
    assert flip_count(decision, dataclasses.replace(finding, budget=0.2)) is None
    measured = decision.run.payload["measurements"]
    odd = {**measured[1], "value": 0.4137}
    run = dataclasses.replace(
        decision.run, payload={**decision.run.payload, "measurements": [measured[0], odd]}
    )
    assert flip_count(dataclasses.replace(decision, run=run), finding) is None


def test_reliability_is_one_compact_figure_with_bin_counts_and_no_empty_panel(
    tabular: Gated,
) -> None:
    config, decision = tabular.ws.config, tabular.decision
    clean = [ReliabilityBin(0.0, 0.5, 0.4, 0.25, 4), ReliabilityBin(0.5, 1.0, 0.8, 0.75, 412)]
    attacked = [
        ReliabilityBin(0.0, 0.5, 0.45, 0.0, 30),  # held samples, all wrong: still drawn
        ReliabilityBin(0.5, 1.0, 0.0, 0.0, 0),
    ]
    nothing = [ReliabilityBin(0.0, 0.5, 0.0, 0.0, 0), ReliabilityBin(0.5, 1.0, 0.0, 0.0, 0)]
    page = html_report(
        config,
        decision,
        tabular.findings,
        reliability={"clean": clean, "attacked": attacked, "nothing": nothing},
    )
    assert page.count('<figure class="reliability"') == 1
    figure = page[page.index('<figure class="reliability"') : page.index("</figure>")]
    panels = re.findall(r'<svg class="plot" data-plot="(reliability-\d)".*?</svg>', figure)
    assert panels == ["reliability-0", "reliability-1"]
    svgs = re.findall(r"<svg .*?</svg>", figure)
    counts = [re.findall(r'<text class="count"[^>]*>([^<]+)</text>', svg)[1:] for svg in svgs]
    assert counts == [["30"], ["4", "412"]]  # "attacked" sorts before "clean"
    for svg in svgs:
        root = _svg_tree(svg)
        assert int(root.get("width", 0)) < FULL.width and int(root.get("height", 0)) < FULL.height
    bar = next(e for e in _svg_tree(svgs[0]).iter("rect") if e.get("class") == "bin")
    assert float(bar.get("height", 0)) >= 1.5
    assert "Not drawn, no samples in any bin: nothing." in page
    assert "nothing (ECE" not in page


def test_short_counts_fit_in_four_characters() -> None:
    shown = {c: short_count(c) for c in (0, 7, 412, 999, 1000, 1234, 9949, 9950, 12_345)}
    assert shown == {
        0: "0", 7: "7", 412: "412", 999: "999", 1000: "1.0k", 1234: "1.2k", 9949: "9.9k",
        9950: "10k", 12_345: "12k",
    }  # fmt: skip
    assert short_count(999_499) == "999k" and short_count(999_500) == "1M"
    assert short_count(3_400_000) == "3M"
    assert all(len(short_count(c)) <= 4 for c in range(0, 2_000_000, 997))


CHROMIUM = shutil.which("chromium")

COUNT_BOXES = """() => [...document.querySelectorAll('svg.plot')].map(svg =>
  [...svg.querySelectorAll('text.count')].slice(1).map(t => {
    const box = t.getBBox(); return [box.x, box.x + box.width]; }))"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_bin_counts_do_not_overlap_in_chromium(tabular: Gated, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    widest = 9950 - 1  # "9.9k", the widest short count
    bins = [ReliabilityBin(i / 15, (i + 1) / 15, (i + 0.5) / 15, 0.5, widest) for i in range(15)]
    path = tmp_path / HTML_NAME
    path.write_text(html_report(tabular.ws.config, tabular.decision, reliability={"many": bins}))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(path.resolve().as_uri(), wait_until="load")
            (boxes,) = [b for b in page.evaluate(COUNT_BOXES) if b]
        finally:
            browser.close()
    assert len(boxes) == 15
    for (_, right), (left, _) in pairwise(boxes):
        assert right <= left, boxes
