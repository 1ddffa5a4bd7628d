"""The HTML report opened in a real headless Chromium: it renders, draws, and runs nothing.

Needs the `chromium` binary (the Makefile's dev target installs it with apt-get) and the
playwright package; the browser playwright would download is never used.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from hardenml.report import HTML_NAME, reliability_diagram, write_html
from test_reports_support import OWNER, PROJECT, Gated, gated_workspace

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

PAGE_FACTS = """() => ({
  title: document.title,
  scripts: document.scripts.length,
  plots: [...document.querySelectorAll('svg.plot')].map(svg => {
    const box = svg.getBoundingClientRect();
    return {id: svg.dataset.plot, width: box.width, height: box.height,
            marks: svg.querySelectorAll('circle, rect.bin').length};
  }),
  findings: [...document.querySelectorAll('#findings tbody tr')].map(tr => ({
    id: tr.dataset.findingId, cells: [...tr.cells].map(td => td.textContent.trim())})),
  images: [...document.images].map(img => ({ok: img.complete, width: img.naturalWidth})),
  summary: {
    top: document.querySelector('#summary').getBoundingClientRect().top,
    firstSection: document.querySelector('h2').getBoundingClientRect().top,
    rows: [...document.querySelectorAll('#deciding tbody tr')].map(tr => tr.dataset.kind),
  },
})"""


def open_report(path: Path) -> tuple[dict[str, Any], list[str]]:
    """Load the page; return facts about what rendered and every problem the browser saw."""
    problems: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.on(
                "console",
                lambda m: (
                    problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
            page.goto(path.resolve().as_uri(), wait_until="load")
            facts = page.evaluate(PAGE_FACTS)
        finally:
            browser.close()
    return facts, problems


def expected_rows(gated: Gated) -> list[str]:
    return [f.finding_id for f in gated.findings.values() if f.model == gated.decision.run.model]


def test_tabular_report_renders_plots_and_findings_without_errors(
    digits_mlp: nn.Module, tmp_path: Path
) -> None:
    gated = gated_workspace(tmp_path, digits_mlp)
    facts, problems = open_report(gated.reports / HTML_NAME)
    assert problems == []
    assert facts["scripts"] == 0
    # The hostile project name reached the page as text, not as markup.
    assert PROJECT in facts["title"]
    recorded = gated.decision.run.payload["calibration"]
    ids = [p["id"] for p in facts["plots"]]
    assert ids == ["robust-0"] + [f"reliability-{i}" for i in range(len(recorded))]
    for plot in facts["plots"]:
        assert plot["width"] > 100 and plot["height"] > 100 and plot["marks"] > 0
    assert facts["plots"][0]["marks"] == 4
    rows = facts["findings"]
    assert [r["id"] for r in rows] == expected_rows(gated) and len(rows) == 1
    f = gated.decision.blocking_findings[0]
    assert rows[0]["cells"][:4] == [f.finding_id, "critical", "open", "yes"]
    # The threat's ATLAS and OWASP ids sit between the finding and its value.
    assert rows[0]["cells"][5].split() == [*f.taxonomy["atlas"], *f.taxonomy["owasp_ml"]]
    assert rows[0]["cells"][9] == OWNER
    assert facts["images"] == []
    # The before/after summary is drawn above every section, one row per problem.
    summary = facts["summary"]
    assert summary["top"] < summary["firstSection"] and summary["rows"] == ["policy check"]


def test_image_report_renders_thumbnails_and_a_reliability_diagram(
    digits_mlp: nn.Module, digits: tuple[np.ndarray, ...], tmp_path: Path
) -> None:
    gated = gated_workspace(tmp_path, digits_mlp, shape="[1, 8, 8]")
    _, _, x_test, y_test = digits
    with torch.no_grad():
        probs = torch.softmax(digits_mlp(torch.from_numpy(x_test)), dim=1).numpy()
    bins = reliability_diagram(probs, y_test, n_bins=10)
    path = write_html(
        tmp_path / "with-reliability.html",
        gated.ws.config,
        gated.decision,
        gated.findings,
        reliability={"digits test split": bins},
    )
    facts, problems = open_report(path)
    assert problems == []
    plots = {p["id"]: p for p in facts["plots"]}
    assert set(plots) == {"robust-0", "reliability-0"}
    assert all(p["width"] > 100 and p["height"] > 100 for p in plots.values())
    assert plots["reliability-0"]["marks"] == 2 * sum(b.count > 0 for b in bins)
    assert [r["id"] for r in facts["findings"]] == expected_rows(gated)
    images = facts["images"]
    assert len(images) == 3 * min(8, gated.decision.blocking_findings[0].evidence[0]["count"])
    assert all(img["ok"] and img["width"] == 64 for img in images)


def test_image_report_with_attribution_maps_renders_them(
    digits_mlp: nn.Module, tmp_path: Path
) -> None:
    pytest.importorskip("captum")
    from hardenml.workflow import Workspace, gate
    from test_reports_support import save_weights, write_config

    save_weights(digits_mlp, tmp_path / "model.safetensors")
    config = write_config(tmp_path, shape="[1, 8, 8]")
    config.write_text(config.read_text() + "\n[explain]\nenabled = true\nexamples = 2\n")
    ws = Workspace.open(config)
    gate(ws)
    facts, problems = open_report(ws.config.reports_dir / HTML_NAME)
    assert problems == []
    images = facts["images"]
    shown = min(
        8,
        next(f for f in ws.ledger.events() if f.kind == "finding.opened").payload["evidence"][0][
            "count"
        ],
    )
    # Three pictures per example, and two attribution maps for each of the two explained.
    assert len(images) == 3 * shown + 2 * 2
    assert all(img["ok"] and img["width"] == 64 for img in images)
