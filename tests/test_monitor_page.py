"""The status page of the live service, opened in a real headless Chromium with the bearer
token: it renders every plot, shows the versions and the readings, runs nothing, loads
nothing from outside, and escapes what came from the config.

Needs the `chromium` binary and the playwright package, as tests/test_html_browser.py."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hardenml import workflow
from hardenml.monitor.page import status_page
from monitor_support import TOKEN, TOKEN_ENV, call, monitor_workspace, running
from test_html_browser import ARGS, CHROMIUM, sync_api

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
ODD_NAME = '<img src=x onerror="alert(1)">'

PAGE_FACTS = """() => ({
  title: document.title,
  scripts: document.scripts.length,
  plots: [...document.querySelectorAll('svg.plot')].map(svg => {
    const box = svg.getBoundingClientRect();
    return {id: svg.dataset.plot, width: box.width, marks: svg.querySelectorAll('rect.bin').length,
            lines: svg.querySelectorAll('polyline').length};
  }),
  versions: [...document.querySelectorAll('#versions tbody tr')].map(
    tr => [...tr.cells].map(td => td.textContent.trim())),
  readings: [...document.querySelectorAll('#drift tbody tr')].map(tr => tr.cells[0].textContent),
  images: document.images.length,
})"""


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


def test_the_status_page_renders_in_chromium_without_a_console_error(
    tmp_path: Path, digits_weights: Path, digits: tuple[np.ndarray, ...]
) -> None:
    ws = monitor_workspace(
        tmp_path / "ws",
        digits_weights,
        monitor='detectors = ["feature_drift", "confidence_shift"]\nmin_window = 20\n'
        "evaluate_every_s = 0.1\n[monitor.telemetry]\nflush_interval_s = 0.05\n",
    )
    source = ws.config.source
    assert source is not None
    source.write_text(source.read_text().replace('name = "digits-mlp"', f"name = '{ODD_NAME}'"))
    ws = workflow.Workspace.open(source)
    workflow.release(ws, force=True)
    problems: list[str] = []
    with running(ws) as served:
        for start in range(0, 120, 20):
            batch = digits[2][start : start + 20].tolist()
            assert call(served.port, "POST", "/v1/predict", {"inputs": batch}).status == 200
        watch = served.service.watch
        assert watch is not None
        deadline = time.monotonic() + 30
        while watch.evaluations_ < 2 or served.service.writer.backlog:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                page = browser.new_page(extra_http_headers={"Authorization": f"Bearer {TOKEN}"})
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
                requested: list[str] = []
                page.on("request", lambda r: requested.append(r.url))
                response = page.goto(served.url + "/", wait_until="load")
                assert response is not None and response.status == 200
                facts: dict[str, Any] = page.evaluate(PAGE_FACTS)
            finally:
                browser.close()
    assert problems == []
    assert requested == [served.url + "/"]
    assert facts["title"] == f"hardenml monitor: {ODD_NAME}"
    assert facts["scripts"] == 0 and facts["images"] == 0
    plots = {plot["id"]: plot for plot in facts["plots"]}
    assert set(plots) == {"shares", "traffic", "confidence", "drift"}
    assert plots["traffic"]["lines"] == 1 and plots["confidence"]["marks"] == 10
    assert plots["drift"]["marks"] > 0 and all(plot["width"] > 100 for plot in plots.values())
    assert [row[1:3] for row in facts["versions"]] == [["released", "100%"]]
    assert {"feature_drift", "confidence_shift"} <= set(facts["readings"])


def test_the_status_page_escapes_what_came_from_outside(
    tmp_path: Path, digits_weights: Path
) -> None:
    ws = monitor_workspace(tmp_path / "ws", digits_weights)
    with running(ws) as served:
        service = served.service
        service.model_name = ODD_NAME
        html = status_page(service)
    assert ODD_NAME not in html and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
