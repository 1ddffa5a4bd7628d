"""One self-contained HTML page per gate decision: plots, evidence and findings.

The page loads nothing: charts are inline SVG, pictures are data: URIs, there is no
script, and a Content-Security-Policy forbids any other source. It is rendered from
`hardenml/templates/report.html.j2` by Jinja2 with autoescaping, so every string that
comes from the config, the ledger or the data is escaped where it is printed; the view
(`html_view.py`, `html_examples.py`) decides what the page shows.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, Template

from hardenml.config import HardenConfig
from hardenml.gate import GateDecision
from hardenml.report.calibration import Reliability, reliability_from_payload
from hardenml.report.common import Findings, atomic_write, finding_list
from hardenml.report.html_view import page_view

TEMPLATE_NAME = "report.html.j2"


@functools.cache
def _template() -> Template:
    """The page template, loaded from the installed package on first use (not at import).

    StrictUndefined: a name the view does not provide fails the render instead of
    printing an empty string into a release report.
    """
    env = Environment(
        loader=PackageLoader("hardenml", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return env.get_template(TEMPLATE_NAME)


def html_report(
    config: HardenConfig,
    decision: GateDecision,
    findings: Findings | None = None,
    *,
    baseline: Mapping[str, Any] | None = None,
    reliability: Reliability | None = None,
) -> str:
    """The page for one decision.

    Args:
        findings: the ledger's findings (all of them or a mapping by id); only those of
            the decided run's model are shown. Without it, the decision's blocking ones.
        baseline: the `run.completed` payload of the model before (the baseline), drawn
            beside the candidate's curves.
        reliability: label -> reliability bins the caller measured; without it, those the
            run recorded under `reliability`, else the section says "not measured".
    """
    rel = (
        dict(reliability)
        if reliability is not None
        else reliability_from_payload(decision.run.payload)
    )
    view = page_view(
        config, decision, finding_list(findings, decision), baseline=baseline, reliability=rel
    )
    return _template().render(page=view)


def write_html(
    path: Path,
    config: HardenConfig,
    decision: GateDecision,
    findings: Findings | None = None,
    *,
    baseline: Mapping[str, Any] | None = None,
    reliability: Reliability | None = None,
) -> Path:
    page = html_report(config, decision, findings, baseline=baseline, reliability=reliability)
    return atomic_write(path, page)
