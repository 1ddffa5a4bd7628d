"""The summary at the top of the HTML report: the verdict, the checks that decide it, and
the baseline beside the candidate, over real scans and gates of the digits MLP."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from hardenml.gate import decide
from hardenml.records import Measurement
from hardenml.report import HTML_NAME, html_report
from hardenml.report.bundle import baseline_run
from hardenml.report.html_summary import summary_view
from test_reports_support import Gated, gated_workspace


@pytest.fixture(scope="module")
def tabular(digits_mlp: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Gated:
    return gated_workspace(tmp_path_factory.mktemp("summary"), digits_mlp)


def _summary(page: str) -> str:
    return page[page.index('<section id="summary">') : page.index("</section>")]


def _rows(summary: str) -> list[list[str]]:
    body = summary[summary.index("<tbody>") :]
    return [
        [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        for row in body.split("<tr")[1:]
    ]


def test_the_summary_comes_first_and_names_what_fails_the_release(tabular: Gated) -> None:
    page = (tabular.reports / HTML_NAME).read_text()
    assert page.index('<section id="summary">') < page.index("<h2>")
    summary = _summary(page)
    assert "FAIL: 1 problem blocks the release." in summary
    assert "no baseline: no earlier model of this name is recorded" in summary
    assert "<th>Baseline</th>" not in summary
    (row,) = _rows(summary)
    check = tabular.decision.checks[1]
    m = check.measurement
    assert m is not None and not check.passed
    # The failed check and its blocking finding are one problem, one row.
    assert row[0] == f"{check.name} (policy check)"
    assert row[1] == f"{m.value:.3f} ({m.ci_low:.3f} to {m.ci_high:.3f})"
    assert row[2:] == [f"≥ {check.threshold:.3f}", "FAIL"]


def test_a_patched_model_is_shown_beside_the_one_before(
    digits_mlp: nn.Module, tmp_path: Path
) -> None:
    first = gated_workspace(tmp_path, digits_mlp)
    weaker = copy.deepcopy(digits_mlp)
    with torch.no_grad():
        weaker[3].weight.mul_(0.5)
    second = gated_workspace(tmp_path, weaker)
    summary = _summary((second.reports / HTML_NAME).read_text())
    assert "previous model" in summary and first.decision.run.run_id in summary
    assert "<th>Baseline</th><th>Change</th>" in summary
    before = {
        Measurement.from_dict(m).key: Measurement.from_dict(m)
        for m in first.decision.run.payload["measurements"]
    }
    rows = _rows(summary)
    failed = [c for c in second.decision.checks if not c.passed]
    checks, others = rows[: len(failed)], rows[len(failed) :]
    assert [r[0] for r in checks] == [f"{c.name} (policy check)" for c in failed]
    # Blocking findings that no failed check tells (here an unreliable evaluation).
    untold = [f for f in second.decision.blocking_findings if f.metric.startswith("integrity:")]
    assert [r[0].split(" ")[0] for r in others] == [f.finding_id for f in untold]
    assert all(r[-1] == "FAIL" for r in others)
    for row, check in zip(checks, failed, strict=True):
        now, old = check.measurement, before[check.name]
        assert now is not None
        assert row[2] == f"{old.value:.3f} ({old.ci_low:.3f} to {old.ci_high:.3f})"
        assert row[3] == f"{now.value - old.value:+.3f}"
    assert baseline_run(second.ws.ledger.events(), second.decision.run) is not None


def test_a_passing_gate_lists_every_check_it_passed(tabular: Gated) -> None:
    config = tabular.ws.config
    robust = config.policy.robust[0]
    lowered = config.model_copy(
        update={
            "policy": config.policy.model_copy(
                update={"robust": [robust.model_copy(update={"min_accuracy": 0.0})]}
            )
        }
    )
    decision = decide(lowered, tabular.decision.run, {})
    assert decision.passed
    view = summary_view(decision, None)
    assert view.headline == f"PASS: all {len(view.rows)} checks hold."
    names = [r.name for r in view.rows]
    assert names == [c.name for c in decision.checks] + [g.name for g in decision.extra_checks]
    assert all(r.passed for r in view.rows)
    summary = _summary(html_report(lowered, decision, {}))
    assert '<td class="bad">' not in summary and "<th>Checks</th>" in summary
