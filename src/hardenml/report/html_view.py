"""What the HTML page shows, decided here and handed to the template as plain data.

Every choice of rows, order and number format is made in this module; the template
(`templates/report.html.j2`) only loops and prints, and Jinja2 escapes whatever it prints.
The one exception to escaping is the charts: `svg.py` escapes every string it embeds, so
its output enters the page as `Markup` through `_trusted_svg` and nowhere else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from hardenml._version import __version__
from hardenml.config import HardenConfig
from hardenml.gate import GateDecision
from hardenml.ledger import FindingState
from hardenml.report.calibration import Reliability, bins_calibration_error
from hardenml.report.common import (
    Curve,
    blocking_ids,
    curves,
    fmt,
    gate_checks,
    measurements,
    status,
)
from hardenml.report.html_examples import ExampleBlock, example_blocks
from hardenml.report.html_summary import SummaryView, summary_view
from hardenml.report.svg import (
    BASELINE_COLOUR,
    CANDIDATE_COLOUR,
    REQUIRED_COLOUR,
    Mark,
    Point,
    Series,
    line_chart,
    reliability_chart,
)


@dataclass(frozen=True)
class CheckRow:
    """A policy threshold: `measured` and `interval` are None when it was not measured."""

    name: str
    measured: str | None
    interval: str | None
    required: str
    passed: bool


@dataclass(frozen=True)
class GateCheckRow:
    name: str
    detail: str
    passed: bool


@dataclass(frozen=True)
class SuiteRow:
    """A behavioural suite; `measured` is its failure rate, or accuracy for a minimum."""

    name: str
    kind: str
    tested: str
    n: str
    failures: str
    measured: str
    interval: str
    required: str
    passed: bool


@dataclass(frozen=True)
class CurveSection:
    """Robust accuracy (or corruption accuracy) against budget: one chart per threat."""

    heading: str
    section_id: str
    charts: list[Markup]
    note: str
    missing: str


@dataclass(frozen=True)
class ReliabilityPanel:
    label: str
    chart: Markup
    ece: str
    samples: int


@dataclass(frozen=True)
class CalibrationView:
    """The reliability panels with samples, and the labels that had none (not drawn)."""

    panels: list[ReliabilityPanel]
    without_samples: list[str]
    bar_colour: str = CANDIDATE_COLOUR
    mean_colour: str = REQUIRED_COLOUR


@dataclass(frozen=True)
class FindingRow:
    finding_id: str
    severity: str
    status: str
    blocks: bool
    title: str
    remediation: str
    value: str
    interval: str
    required: str
    owner: str
    due: str
    # MITRE ATLAS technique ids, then OWASP ML Top Ten ids; empty for a finding about no threat.
    taxa: tuple[str, ...] = ()


@dataclass(frozen=True)
class MeasurementRow:
    """One measurement; `baseline` and `change` are None when the page has no baseline."""

    metric: str
    threat: str
    budget: str
    value: str
    interval: str
    n: str
    baseline: str | None
    change: str | None


@dataclass(frozen=True)
class PageView:
    """Everything the template prints, in the order the page shows it."""

    title: str
    project: str
    model: str
    status: str
    exit_code: int
    summary: SummaryView
    reasons: list[str]
    run_rows: list[tuple[str, str]]
    checks: list[CheckRow]
    gate_checks: list[GateCheckRow]
    suites: list[SuiteRow]
    curve_sections: list[CurveSection]
    calibration: CalibrationView
    examples: list[ExampleBlock]
    findings: list[FindingRow]
    measurements: list[MeasurementRow]
    has_baseline: bool
    version: str
    ledger_seq: int
    decided_at: str


def page_view(
    config: HardenConfig,
    decision: GateDecision,
    own: Sequence[FindingState],
    *,
    baseline: Mapping[str, Any] | None,
    reliability: Reliability,
) -> PageView:
    """The view of one decision; `own` are the findings of its model, in display order."""
    return PageView(
        title=f"hardenml report: {config.project.name} / {decision.run.model}",
        project=config.project.name,
        model=decision.run.model,
        status=decision.status,
        exit_code=decision.exit_code,
        summary=summary_view(decision, baseline),
        reasons=list(decision.reasons),
        run_rows=run_rows(config, decision, baseline),
        checks=check_rows(decision),
        gate_checks=[GateCheckRow(g.name, g.reason, g.passed) for g in gate_checks(decision)],
        suites=[suite_row(s) for s in decision.run.payload.get("behaviour") or []],
        curve_sections=curve_sections(config, decision, baseline),
        calibration=calibration_view(reliability),
        examples=example_blocks(config, decision, own),
        findings=finding_rows(decision, own),
        measurements=measurement_rows(decision, baseline),
        has_baseline=baseline is not None,
        version=__version__,
        ledger_seq=decision.run.seq,
        decided_at=decision.decided_at,
    )


def _trusted_svg(svg: str) -> Markup:
    """Charts from `hardenml.report.svg`, which escapes every string it embeds (see its
    docstring and tests/test_html_view.py); nothing else may become `Markup`."""
    return Markup(svg)


def run_rows(
    config: HardenConfig, decision: GateDecision, baseline: Mapping[str, Any] | None
) -> list[tuple[str, str]]:
    run = decision.run.payload
    rows = [
        ("Project", config.project.name),
        ("Model", f"{decision.run.model} (sha256 {decision.run.model_sha256})"),
        ("Run", f"{run.get('run_id')} (seed {run.get('seed')}, n = {run.get('n')})"),
        ("Data", f"sha256 {run.get('data_sha256')}"),
        ("Scanned", f"{run.get('started')} to {run.get('finished')}"),
    ]
    if baseline is not None:
        sha = str(baseline.get("model_sha256", ""))[:12]
        rows.append(
            ("Baseline", f"{baseline.get('model')} sha256 {sha}, run {baseline.get('run_id')}")
        )
    return rows


def check_rows(decision: GateDecision) -> list[CheckRow]:
    rows = []
    for check in decision.checks:
        m = check.measurement
        rows.append(
            CheckRow(
                name=check.name,
                measured=None if m is None else fmt(m.value),
                interval=None if m is None else f"{fmt(m.ci_low)} to {fmt(m.ci_high)} (n={m.n})",
                required=f"≥ {fmt(check.threshold)}",
                passed=check.passed,
            )
        )
    return rows


def suite_tested(suite: Mapping[str, Any]) -> str:
    """What a behavioural suite did to the inputs, from its result record."""
    kind = suite.get("kind")
    if kind == "invariance" and "severity" in suite:
        return f"{suite.get('transform')} at severity {suite.get('severity')}"
    if kind == "invariance":
        return f"noise up to {suite.get('noise')} on {suite.get('features')}"
    if kind == "directional":
        change = suite.get("change")
        shown = f"{change:+g}" if isinstance(change, int | float) else str(change)
        expect = str(suite.get("expect")).replace("_", " ")
        return f"{suite.get('feature')} {shown}: P({suite.get('class')}) must {expect}"
    return "all samples" if suite.get("class") is None else f"class {suite.get('class')}"


def suite_row(suite: Mapping[str, Any]) -> SuiteRow:
    if suite.get("kind") == "minimum":
        measured, ci = suite.get("accuracy"), suite.get("accuracy_ci") or [None, None]
        required = f"accuracy ≥ {fmt(suite.get('min_accuracy'))}"
    else:
        measured, ci = suite.get("failure_rate"), suite.get("failure_rate_ci") or [None, None]
        required = f"failure rate ≤ {fmt(suite.get('max_failure_rate'))}"
    return SuiteRow(
        name=str(suite.get("name")),
        kind=str(suite.get("kind")),
        tested=suite_tested(suite),
        n=str(suite.get("n")),
        failures=str(suite.get("failures")),
        measured=fmt(measured),
        interval=f"{fmt(ci[0])} to {fmt(ci[1])}",
        required=required,
        passed=bool(suite.get("passed")),
    )


def _points(curve: Curve) -> list[Point]:
    return [Point(float(m.budget or 0.0), m.value, m.ci_low, m.ci_high) for m in curve.points]


def curve_sections(
    config: HardenConfig, decision: GateDecision, baseline: Mapping[str, Any] | None
) -> list[CurveSection]:
    """Adversarial threats first, then corruptions; threats by name within each."""
    candidate = curves(config, decision.run.payload)
    before = curves(config, baseline) if baseline is not None else {}
    sections = []
    for corruption in (False, True):
        prefix = "corruption" if corruption else "robust"
        charts: list[Markup] = []
        for threat, curve in sorted(candidate.items()):
            if curve.corruption != corruption:
                continue
            series = [Series(f"candidate {decision.run.model}", _points(curve), CANDIDATE_COLOUR)]
            if threat in before:
                series.append(Series("baseline", _points(before[threat]), BASELINE_COLOUR, True))
            marks = [
                Mark(r.budget, r.min_accuracy, f"required >= {r.min_accuracy:g} at {r.budget:g}")
                for r in config.policy.robust
                if r.threat == threat
            ]
            metric = curve.metric.replace("_", " ")
            chart = line_chart(
                plot_id=f"{prefix}-{len(charts)}",
                title=f"{metric}: {threat}",
                x_label="severity" if corruption else "budget (perturbation size)",
                y_label=metric,
                series=series,
                marks=marks,
            )
            charts.append(_trusted_svg(chart))
        sections.append(
            CurveSection(
                heading="Corruptions" if corruption else "Robust accuracy vs budget",
                section_id=f"{prefix}-curves",
                charts=charts,
                note=(
                    "Severity 0 is clean accuracy."
                    if corruption
                    else "Budget 0 is clean accuracy. Bars are confidence intervals."
                ),
                missing=(
                    f"Not measured: the run has no "
                    f"{'corruption' if corruption else 'adversarial'} threats."
                ),
            )
        )
    return sections


def calibration_view(reliability: Reliability) -> CalibrationView:
    """One compact panel per label with samples, labels in order; a label whose bins hold
    no sample is named, never drawn as an empty diagram."""
    panels: list[ReliabilityPanel] = []
    without: list[str] = []
    for label, bins in sorted(reliability.items()):
        samples = sum(b.count for b in bins)
        if samples == 0:
            without.append(label)
            continue
        chart = reliability_chart(plot_id=f"reliability-{len(panels)}", title=label, bins=bins)
        panels.append(
            ReliabilityPanel(label, _trusted_svg(chart), fmt(bins_calibration_error(bins)), samples)
        )
    return CalibrationView(panels, without)


def finding_rows(decision: GateDecision, own: Sequence[FindingState]) -> list[FindingRow]:
    blocking = blocking_ids(decision)
    return [
        FindingRow(
            finding_id=f.finding_id,
            severity=f.severity,
            status=status(f),
            blocks=f.finding_id in blocking,
            title=f.title,
            remediation=f.remediation,
            value=fmt(f.value),
            interval=f"{fmt(f.ci[0])} to {fmt(f.ci[1])}" if len(f.ci) == 2 else "-",
            required=fmt(f.threshold),
            owner=f.owner,
            due=f.due,
            taxa=tuple(str(i) for key in ("atlas", "owasp_ml") for i in f.taxonomy.get(key) or []),
        )
        for f in own
    ]


def measurement_rows(
    decision: GateDecision, baseline: Mapping[str, Any] | None
) -> list[MeasurementRow]:
    """The run's measurements in the order it recorded them, each beside the baseline's
    value of the same key when there is a baseline."""
    before = {m.key: m for m in measurements(baseline)} if baseline is not None else {}
    rows = []
    for m in measurements(decision.run.payload):
        old = before.get(m.key)
        delta = (
            m.value - old.value
            if old is not None and math.isfinite(m.value) and math.isfinite(old.value)
            else None
        )
        rows.append(
            MeasurementRow(
                metric=m.metric,
                threat=m.threat or "-",
                budget="-" if m.budget is None else f"{m.budget:g}",
                value=fmt(m.value),
                interval=f"{fmt(m.ci_low)} to {fmt(m.ci_high)}",
                n=str(m.n),
                baseline=None if baseline is None else fmt(None if old is None else old.value),
                change=None if baseline is None else ("-" if delta is None else f"{delta:+.3f}"),
            )
        )
    return rows
