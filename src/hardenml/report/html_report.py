"""One self-contained HTML page per gate decision: plots, evidence and findings.

The page loads nothing: charts are inline SVG, pictures are data: URIs, there is no
script, and a Content-Security-Policy forbids any other source. Every string that comes
from the config, the ledger or the data goes through `html.escape`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from hardenml._version import __version__
from hardenml.config import HardenConfig
from hardenml.gate import GateDecision
from hardenml.imaging import delta_pixels, png_data_uri, to_pixels, upscale
from hardenml.ledger import FindingState
from hardenml.report.calibration import (
    Reliability,
    ReliabilityBin,
    bins_calibration_error,
    reliability_from_payload,
)
from hardenml.report.common import (
    Curve,
    Findings,
    atomic_write,
    blocking_ids,
    curves,
    finding_list,
    fmt,
    gate_checks,
    measurements,
    status,
)
from hardenml.report.evidence import Evidence, EvidenceProblem, is_image_shape, load_evidence
from hardenml.report.svg import (
    BASELINE_COLOUR,
    CANDIDATE_COLOUR,
    Mark,
    Point,
    Series,
    line_chart,
    reliability_chart,
)

EXAMPLES_SHOWN = 8
TOP_FEATURES = 5

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1100px; padding: 0 20px 40px; color: #1f2328; }
h1 { margin: 24px 0 4px; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 4px;
margin-top: 32px; }
.verdict { display: inline-block; padding: 2px 10px; border-radius: 12px; color: #fff;
           font-weight: 600; } .pass { background: #1a7f37; } .fail { background: #cf222e; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.sev-critical { color: #a40e26; font-weight: 700; } .sev-high { color: #cf222e; font-weight: 600; }
.sev-medium { color: #9a6700; } .sev-low { color: #57606a; }
.ok { color: #1a7f37; } .bad { color: #cf222e; font-weight: 600; }
.na { color: #57606a; font-style: italic; }
.plots { display: flex; flex-wrap: wrap; gap: 16px; }
svg.plot { border: 1px solid #d0d7de; background: #fff; }
svg.plot text { font: 11px system-ui, sans-serif; fill: #1f2328; }
svg.plot .title { font-size: 13px; font-weight: 600; }
svg.plot .grid { stroke: #eaeef2; } svg.plot .axes { fill: none; stroke: #57606a; }
svg.plot .ci { stroke-width: 1.5; } svg.plot .diagonal { stroke: #1f2328; stroke-width: 1.5; }
.examples { display: flex; flex-wrap: wrap; gap: 12px; }
figure.example { margin: 0; border: 1px solid #d0d7de; padding: 6px; }
figure.example img { image-rendering: pixelated; margin-right: 4px; border: 1px solid #d0d7de; }
figcaption { font-size: 12px; } code { font-size: 12px; }
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def e(value: object) -> str:
    return escape(str(value), quote=True)


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
    run = decision.run.payload
    own = finding_list(findings, decision)
    rel = dict(reliability) if reliability is not None else reliability_from_payload(run)
    title = f"hardenml report: {config.project.name} / {decision.run.model}"
    body = [
        _header(config, decision, baseline),
        _checks(decision),
        _behaviour_section(decision),
        _curves_section(config, decision, baseline),
        _reliability_section(rel),
        _examples_section(config, own),
        _findings_section(config, decision, own),
        _measurements_section(decision, baseline),
        f'<footer><p class="na">hardenml {e(__version__)}; ledger event '
        f"{e(decision.run.seq)}; decided {e(decision.decided_at)}.</p></footer>",
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{e(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _header(
    config: HardenConfig, decision: GateDecision, baseline: Mapping[str, Any] | None
) -> str:
    run = decision.run.payload
    rows = [
        ("Project", config.project.name),
        ("Model", f"{decision.run.model} (sha256 {decision.run.model_sha256})"),
        ("Run", f"{run.get('run_id')} (seed {run.get('seed')}, n = {run.get('n')})"),
        ("Data", f"sha256 {run.get('data_sha256')}"),
        ("Scanned", f"{run.get('started')} to {run.get('finished')}"),
    ]
    if baseline is not None:
        rows.append(("Baseline", _baseline_label(baseline)))
    reasons = "".join(f"<li>{e(r)}</li>" for r in decision.reasons)
    return (
        f"<header><h1>{e(config.project.name)}: {e(decision.run.model)}</h1>"
        f'<p>Release gate: <span class="verdict {e(decision.status)}" id="verdict">'
        f"{e(decision.status.upper())}</span> (exit code {e(decision.exit_code)})</p>"
        + (f'<ul id="reasons">{reasons}</ul>' if reasons else "")
        + '<table id="run">'
        + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
        + "</table></header>"
    )


def _baseline_label(baseline: Mapping[str, Any]) -> str:
    sha = str(baseline.get("model_sha256", ""))[:12]
    return f"{baseline.get('model')} sha256 {sha}, run {baseline.get('run_id')}"


def _checks(decision: GateDecision) -> str:
    rows = []
    for c in decision.checks:
        m = c.measurement
        result = '<td class="ok">pass</td>' if c.passed else '<td class="bad">FAIL</td>'
        measured = (
            '<td class="na" colspan="2">not measured</td>'
            if m is None
            else f'<td class="num">{fmt(m.value)}</td>'
            f'<td class="num">{fmt(m.ci_low)} to {fmt(m.ci_high)} (n={e(m.n)})</td>'
        )
        rows.append(
            f"<tr><td>{e(c.name)}</td>{measured}"
            f'<td class="num">&ge; {fmt(c.threshold)}</td>{result}</tr>'
        )
    if rows:
        table = (
            '<table id="checks"><thead><tr><th>Check</th><th>Measured</th>'
            "<th>Confidence interval</th><th>Required</th><th>Result</th></tr></thead><tbody>"
            + "".join(rows)
            + "</tbody></table>"
        )
    else:
        table = '<p class="na">The policy sets no thresholds.</p>'
    gate_rows = "".join(
        f"<tr><td>{e(g.name)}</td><td>{e(g.reason)}</td>"
        + ('<td class="ok">pass</td>' if g.passed else '<td class="bad">FAIL</td>')
        + "</tr>"
        for g in gate_checks(decision)
    )
    if gate_rows:
        table += (
            '<table id="gate-checks"><thead><tr><th>Gate check</th><th>Detail</th>'
            f"<th>Result</th></tr></thead><tbody>{gate_rows}</tbody></table>"
        )
    return "<h2>Policy checks</h2>" + table


def _suite_tested(suite: Mapping[str, Any]) -> str:
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


def _behaviour_section(decision: GateDecision) -> str:
    suites = decision.run.payload.get("behaviour") or []
    if not suites:
        return (
            '<h2>Behavioural suites</h2><p class="na" id="behaviour">None declared '
            "(<code>[[behaviour]]</code> in hardenml.toml).</p>"
        )
    rows = []
    for suite in suites:
        if suite.get("kind") == "minimum":
            measured, ci = suite.get("accuracy"), suite.get("accuracy_ci") or [None, None]
            limit = f"accuracy &ge; {fmt(suite.get('min_accuracy'))}"
        else:
            measured, ci = suite.get("failure_rate"), suite.get("failure_rate_ci") or [None, None]
            limit = f"failure rate &le; {fmt(suite.get('max_failure_rate'))}"
        result = '<td class="ok">pass</td>' if suite.get("passed") else '<td class="bad">FAIL</td>'
        rows.append(
            f"<tr><td>{e(suite.get('name'))}</td><td>{e(suite.get('kind'))}</td>"
            f'<td>{e(_suite_tested(suite))}</td><td class="num">{e(suite.get("n"))}</td>'
            f'<td class="num">{e(suite.get("failures"))}</td>'
            f'<td class="num">{fmt(measured)}</td>'
            f'<td class="num">{fmt(ci[0])} to {fmt(ci[1])}</td><td>{limit}</td>{result}</tr>'
        )
    return (
        '<h2>Behavioural suites</h2><table id="behaviour"><thead><tr><th>Suite</th>'
        "<th>Kind</th><th>Tested</th><th>n</th><th>Failures</th>"
        "<th>Failure rate (accuracy for minimum)</th><th>Confidence interval</th>"
        "<th>Required</th><th>Result</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _points(curve: Curve) -> list[Point]:
    return [Point(float(m.budget or 0.0), m.value, m.ci_low, m.ci_high) for m in curve.points]


def _curves_section(
    config: HardenConfig, decision: GateDecision, baseline: Mapping[str, Any] | None
) -> str:
    candidate = curves(config, decision.run.payload)
    before = curves(config, baseline) if baseline is not None else {}
    parts = []
    for corruption, heading in ((False, "Robust accuracy vs budget"), (True, "Corruptions")):
        charts = []
        for i, (threat, curve) in enumerate(sorted(candidate.items())):
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
            charts.append(
                line_chart(
                    plot_id=f"{'corruption' if corruption else 'robust'}-{i}",
                    title=f"{metric}: {threat}",
                    x_label="severity" if corruption else "budget (perturbation size)",
                    y_label=metric,
                    series=series,
                    marks=marks,
                )
            )
        section_id = "corruption-curves" if corruption else "robust-curves"
        if charts:
            note = (
                '<p class="na">Budget 0 is clean accuracy. Bars are confidence intervals.</p>'
                if not corruption
                else '<p class="na">Severity 0 is clean accuracy.</p>'
            )
            parts.append(
                f'<h2>{heading}</h2><div class="plots" id="{section_id}">{"".join(charts)}</div>'
                + note
            )
        else:
            what = "corruption threats" if corruption else "adversarial threats"
            parts.append(
                f'<h2>{heading}</h2><p class="na" id="{section_id}">Not measured: '
                f"the run has no {what}.</p>"
            )
    return "\n".join(parts)


def _reliability_section(rel: Mapping[str, Sequence[ReliabilityBin]]) -> str:
    if not rel:
        return (
            '<h2>Calibration</h2><p class="na" id="reliability">Not measured: the run recorded '
            "no per-bin confidence and accuracy, so no reliability diagram is drawn.</p>"
        )
    charts = []
    for i, (label, bins) in enumerate(sorted(rel.items())):
        charts.append(
            reliability_chart(plot_id=f"reliability-{i}", title=f"reliability: {label}", bins=bins)
        )
    eces = "".join(
        f"<li>{e(label)}: expected calibration error {fmt(bins_calibration_error(bins))} "
        f"over {e(sum(b.count for b in bins))} samples</li>"
        for label, bins in sorted(rel.items())
    )
    return (
        f'<h2>Calibration</h2><div class="plots" id="reliability">{"".join(charts)}</div>'
        f"<ul>{eces}</ul>"
    )


def _class_name(config: HardenConfig, label: Any) -> str:
    i = int(label)
    classes = config.model.classes
    return classes[i] if 0 <= i < len(classes) else str(i)


def _examples_section(config: HardenConfig, own: list[FindingState]) -> str:
    blocks = []
    for f in own:
        if not f.is_open:
            continue
        for item in load_evidence(config, f):
            if isinstance(item, EvidenceProblem):
                blocks.append(
                    f'<h3>{e(f.finding_id)}</h3><p class="bad evidence-problem">Evidence '
                    f"<code>{e(item.path)}</code> not shown: {e(item.reason)}</p>"
                )
            else:
                blocks.append(_evidence_block(config, f, item))
    if not blocks:
        return (
            '<h2>Adversarial examples</h2><p class="na" id="examples">No open finding '
            "recorded adversarial examples.</p>"
        )
    return '<h2>Adversarial examples</h2><div id="examples">' + "\n".join(blocks) + "</div>"


def _evidence_block(config: HardenConfig, f: FindingState, ev: Evidence) -> str:
    n = len(ev.y)
    shown = min(n, EXAMPLES_SHOWN)
    head = (
        f"<h3>{e(f.finding_id)}: {e(f.threat or f.metric)} at budget {e(_g(f.budget))}</h3>"
        f"<p>{e(n)} inputs the attack flipped, {e(shown)} shown; from "
        f"<code>{e(ev.path)}</code>.</p>"
    )
    if is_image_shape(tuple(ev.x.shape[1:])):
        return head + _image_examples(config, ev, shown)
    return head + _tabular_examples(config, ev, shown)


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _image_examples(config: HardenConfig, ev: Evidence, shown: int) -> str:
    bounds = config.model.input.bounds
    figures = []
    for i in range(shown):
        x, x_adv = ev.x[i].astype(np.float64), ev.x_adv[i].astype(np.float64)
        linf = float(np.abs(x_adv - x).max()) if x.size else 0.0
        true, pred = _class_name(config, ev.y[i]), _class_name(config, ev.pred[i])
        images = [
            (to_pixels(x, bounds), f"original, class {true}"),
            (to_pixels(x_adv, bounds), f"adversarial, predicted {pred}"),
            (delta_pixels(x_adv - x), "change (grey: none, white: up, black: down)"),
        ]
        tags = "".join(_img(upscale(px), alt) for px, alt in images)
        figures.append(
            f'<figure class="example">{tags}<figcaption>#{i}: class {e(true)} &rarr; '
            f"predicted {e(pred)}; L&infin; change {linf:.3f}</figcaption></figure>"
        )
    legend = (
        '<p class="na">Each example: the original, the adversarial input, and the change '
        "(grey: none, white: largest increase, black: largest decrease).</p>"
    )
    return legend + '<div class="examples">' + "".join(figures) + "</div>"


def _img(pixels: np.ndarray, alt: str) -> str:
    return (
        f'<img src="{png_data_uri(pixels)}" width="{pixels.shape[1]}" '
        f'height="{pixels.shape[0]}" alt="{e(alt)}" title="{e(alt)}">'
    )


def _tabular_examples(config: HardenConfig, ev: Evidence, shown: int) -> str:
    rows = []
    feature_shape = ev.x.shape[1:]
    for i in range(shown):
        x, x_adv = ev.x[i].ravel(), ev.x_adv[i].ravel()
        delta = x_adv - x
        order = np.argsort(-np.abs(delta), kind="stable")[:TOP_FEATURES]
        changes = "<br>".join(
            f"<code>x{e(_index(int(j), feature_shape))}</code>: {x[j]:.4g} &rarr; "
            f"{x_adv[j]:.4g} ({delta[j]:+.4g})"
            for j in order
            if delta[j] != 0
        )
        linf = float(np.abs(delta).max()) if delta.size else 0.0
        rows.append(
            f'<tr><td class="num">{i}</td><td>{e(_class_name(config, ev.y[i]))}</td>'
            f"<td>{e(_class_name(config, ev.pred[i]))}</td>"
            f'<td class="num">{linf:.4g}</td><td>{changes or "none"}</td></tr>'
        )
    return (
        '<table class="feature-changes"><thead><tr><th>#</th><th>True class</th>'
        "<th>Prediction after attack</th><th>L&infin; change</th>"
        f"<th>Largest feature changes (top {TOP_FEATURES})</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _index(flat: int, shape: tuple[int, ...]) -> str:
    if len(shape) <= 1:
        return f"[{flat}]"
    return "[" + ",".join(str(int(k)) for k in np.unravel_index(flat, shape)) + "]"


def _findings_section(config: HardenConfig, decision: GateDecision, own: list[FindingState]) -> str:
    if not own:
        return '<h2>Findings</h2><p class="na" id="findings">No findings for this model.</p>'
    blocking = blocking_ids(decision)
    rows = []
    for f in own:
        ci = f"{fmt(f.ci[0])} to {fmt(f.ci[1])}" if len(f.ci) == 2 else "-"
        rows.append(
            f'<tr data-finding-id="{e(f.finding_id)}"><td><code>{e(f.finding_id)}</code></td>'
            f'<td class="sev-{e(f.severity)}">{e(f.severity)}</td><td>{e(status(f))}</td>'
            f"<td>{'yes' if f.finding_id in blocking else 'no'}</td>"
            f"<td>{e(f.title)}<br><small>{e(f.remediation)}</small></td>"
            f'<td class="num">{fmt(f.value)}</td><td class="num">{ci}</td>'
            f'<td class="num">{fmt(f.threshold)}</td><td>{e(f.owner)}</td><td>{e(f.due)}</td></tr>'
        )
    return (
        '<h2>Findings</h2><table id="findings"><thead><tr><th>ID</th><th>Severity</th>'
        "<th>Status</th><th>Blocks release</th><th>Finding and remediation</th><th>Value</th>"
        "<th>Confidence interval</th><th>Required</th><th>Owner</th><th>Due</th></tr></thead>"
        "<tbody>" + "".join(rows) + "</tbody></table>"
    )


def _measurements_section(decision: GateDecision, baseline: Mapping[str, Any] | None) -> str:
    before = {m.key: m for m in measurements(baseline)} if baseline is not None else {}
    rows = []
    for m in measurements(decision.run.payload):
        cells = (
            f"<td>{e(m.metric)}</td><td>{e(m.threat or '-')}</td>"
            f'<td class="num">{e(_g(m.budget))}</td><td class="num">{fmt(m.value)}</td>'
            f'<td class="num">{fmt(m.ci_low)} to {fmt(m.ci_high)}</td>'
            f'<td class="num">{e(m.n)}</td>'
        )
        if baseline is not None:
            old = before.get(m.key)
            delta = (
                m.value - old.value
                if old is not None and math.isfinite(m.value) and math.isfinite(old.value)
                else None
            )
            cells += (
                f'<td class="num">{fmt(None if old is None else old.value)}</td>'
                f'<td class="num">{"-" if delta is None else f"{delta:+.3f}"}</td>'
            )
        rows.append(f"<tr>{cells}</tr>")
    extra = "<th>Baseline</th><th>Change</th>" if baseline is not None else ""
    return (
        '<h2>All measurements</h2><table id="measurements"><thead><tr><th>Metric</th>'
        "<th>Threat</th><th>Budget</th><th>Value</th><th>Confidence interval</th><th>n</th>"
        f"{extra}</tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


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
