"""The robustness section of a model card, in Markdown, with Hugging Face front matter.

Follows the "Quantitative Analyses" and "Caveats" parts of Mitchell et al. 2019,
"Model Cards for Model Reporting", https://arxiv.org/abs/1810.03993: each number with
its interval (and how the interval was computed), the conditions it was measured under,
and what it does not cover. The YAML front matter carries the same numbers as
`model-index` evaluation results (`model_index.py`), which the Hugging Face Hub reads.
Text from the config or the ledger is escaped, so it renders as text (Markdown
renderers pass raw HTML through).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

from hardenml._version import __version__
from hardenml.config import HardenConfig
from hardenml.gate import GateDecision
from hardenml.report.calibration import (
    Reliability,
    bins_calibration_error,
    reliability_from_payload,
)
from hardenml.report.common import (
    Findings,
    atomic_write,
    blocking_ids,
    curves,
    finding_list,
    fmt,
    gate_checks,
    json_safe,
    measurements,
)
from hardenml.report.model_index import model_card_metadata
from hardenml.report.yaml_text import dump
from hardenml.scan import interval_method
from hardenml.scan.metrics import BOOTSTRAP, WILSON

# Characters with inline meaning; `<`, `>` and `&` are left to html.escape.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]#!|~])")
_CODE_SAFE = re.compile(r"^[\w.:@/+-]+$")


def md(text: object) -> str:
    """Text safe in a Markdown table cell: no markup, no raw HTML, no line breaks."""
    flat = " ".join(str(text).split())
    return escape(_MD_SPECIAL.sub(r"\\\1", flat), quote=False)


def code(text: object) -> str:
    value = str(text)
    return f"`{value}`" if _CODE_SAFE.match(value) else md(value)


def model_card_section(
    config: HardenConfig,
    decision: GateDecision,
    findings: Findings | None = None,
    *,
    baseline: Mapping[str, Any] | None = None,
    reliability: Reliability | None = None,
) -> str:
    run = decision.run.payload
    confidence = config.policy.confidence
    front_matter = dump(json_safe(model_card_metadata(config, decision)))
    lines = [
        "---",
        front_matter.rstrip("\n"),
        "---",
        "",
        "## Robustness",
        "",
        f"Measured by hardenml {md(__version__)} in run {code(run.get('run_id'))} "
        f"(ledger event {md(decision.run.seq)}) of project {md(config.project.name)}.",
        "",
        f"**Release gate: {decision.status.upper()}** (exit code {decision.exit_code}, "
        f"decided {md(decision.decided_at)})",
        "",
    ]
    lines += [f"- {md(r)}" for r in decision.reasons]
    lines += [
        "",
        "### Evaluation",
        "",
        "| | |",
        "|---|---|",
        f"| Model | {md(decision.run.model)}, sha256 {code(decision.run.model_sha256)} |",
        f"| Data | {md(run.get('n'))} samples, sha256 {code(run.get('data_sha256'))} |",
        f"| Seed | {md(run.get('seed'))} |",
        f"| Intervals | {confidence:.0%} confidence: {WILSON} intervals for accuracies and "
        f"pass rates, {BOOTSTRAP} intervals for ECE, Brier score and margins |",
    ]
    if baseline is not None:
        lines.append(
            f"| Baseline | {md(baseline.get('model'))}, sha256 "
            f"{code(baseline.get('model_sha256'))}, run {code(baseline.get('run_id'))} |"
        )
    lines += ["", "### Policy checks", ""]
    if decision.checks:
        lines += [
            f"| Check | Measured | Interval ({WILSON}) | Required | Result |",
            "|---|---|---|---|---|",
        ]
        for c in decision.checks:
            m = c.measurement
            shown = (
                "not measured | -"
                if m is None
                else f"{fmt(m.value)} | {fmt(m.ci_low)} to {fmt(m.ci_high)}"
            )
            lines.append(
                f"| {md(c.name)} | {shown} | {fmt(c.threshold)} | "
                f"{'pass' if c.passed else '**FAIL**'} |"
            )
    else:
        lines.append("The policy sets no thresholds.")
    extra = gate_checks(decision)
    if extra:
        lines += ["", "| Gate check | Detail | Result |", "|---|---|---|"]
        lines += [
            f"| {md(g.name)} | {md(g.reason)} | {'pass' if g.passed else '**FAIL**'} |"
            for g in extra
        ]
    lines += _curve_tables(config, decision, baseline)
    lines += _calibration(reliability, run)
    lines += _vulnerabilities(decision, findings)
    lines += _privacy(decision)
    lines += _limitations(config)
    return "\n".join(lines) + "\n"


def _curve_tables(
    config: HardenConfig, decision: GateDecision, baseline: Mapping[str, Any] | None
) -> list[str]:
    candidate = curves(config, decision.run.payload)
    before = curves(config, baseline) if baseline is not None else {}
    lines: list[str] = []
    for corruption, heading in ((False, "Robust accuracy by budget"), (True, "Corruptions")):
        lines += ["", f"### {heading}", ""]
        chosen = {t: c for t, c in sorted(candidate.items()) if c.corruption == corruption}
        if not chosen:
            what = "corruption threats" if corruption else "adversarial threats"
            lines.append(f"Not measured: the run has no {what}.")
            continue
        head = "| Threat | Severity |" if corruption else "| Threat | Budget |"
        lines += [
            head + f" Accuracy | Interval ({WILSON}) |" + (" Baseline |" if before else ""),
            "|---|---|---|---|" + ("---|" if before else ""),
        ]
        for threat, curve in chosen.items():
            old = {m.budget: m for m in before[threat].points} if threat in before else {}
            for m in curve.points:
                row = (
                    f"| {md(threat)} | {m.budget:g} | {fmt(m.value)} | "
                    f"{fmt(m.ci_low)} to {fmt(m.ci_high)} |"
                )
                if before:
                    prior = old.get(m.budget)
                    row += f" {fmt(None if prior is None else prior.value)} |"
                lines.append(row)
        lines.append("")
        lines.append("Budget 0 is the clean model." if not corruption else "Severity 0 is clean.")
    other = [
        m
        for m in measurements(decision.run.payload)
        if m.metric not in ("clean_accuracy", "robust_accuracy")
        and not m.metric.startswith("corruption")
    ]
    if other:
        lines += [
            "",
            "### Other measurements",
            "",
            "| Metric | Threat | Budget | Value | Interval | Interval method |",
        ]
        lines.append("|---|---|---|---|---|---|")
        for m in other:
            budget = "-" if m.budget is None else f"{m.budget:g}"
            lines.append(
                f"| {md(m.metric)} | {md(m.threat or '-')} | {budget} | {fmt(m.value)} | "
                f"{fmt(m.ci_low)} to {fmt(m.ci_high)} | {interval_method(m.metric)} |"
            )
    return lines


def _calibration(reliability: Reliability | None, run: Mapping[str, Any]) -> list[str]:
    rel = dict(reliability) if reliability is not None else reliability_from_payload(run)
    lines = ["", "### Calibration", ""]
    if not rel:
        return [*lines, "Not measured: the run recorded no reliability data."]
    lines += ["| Data | Expected calibration error | Samples |", "|---|---|---|"]
    for label, bins in sorted(rel.items()):
        ece = bins_calibration_error(bins)
        lines.append(f"| {md(label)} | {fmt(ece)} | {sum(b.count for b in bins)} |")
    return lines


def _vulnerabilities(decision: GateDecision, findings: Findings | None) -> list[str]:
    own = [f for f in finding_list(findings, decision) if f.is_open]
    lines = ["", "### Known vulnerabilities", ""]
    if not own:
        return [*lines, "No open findings for this model."]
    blocking = blocking_ids(decision)
    lines += [
        "| ID | Severity | Blocks release | Finding | Owner | Due |",
        "|---|---|---|---|---|---|",
    ]
    for f in own:
        lines.append(
            f"| {code(f.finding_id)} | {md(f.severity)} | "
            f"{'yes' if f.finding_id in blocking else 'no'} | {md(f.title)} | {md(f.owner)} | "
            f"{md(f.due)} |"
        )
    lines.append("")
    for f in own:
        lines.append(
            f"- {code(f.finding_id)}: {md(f.exploitation)} Remediation: {md(f.remediation)}"
        )
    return lines


def _privacy(decision: GateDecision) -> list[str]:
    """The differential-privacy guarantee of the model's training, from its lineage event."""
    lines = ["", "### Privacy", ""]
    spent = decision.privacy
    if spent is None:
        return [*lines, "No differential-privacy guarantee is recorded for this model's training."]
    return [
        *lines,
        f"Trained with {md(spent.get('mechanism'))}: ({fmt(spent.get('epsilon'), 2)}, "
        f"{spent.get('delta'):.2g})-differential privacy for {md(spent.get('covers'))} "
        f"({spent.get('training_samples')} samples, noise multiplier "
        f"{fmt(spent.get('noise_multiplier'), 3)}, clipping norm {spent.get('max_grad_norm')}, "
        f"{spent.get('epochs')} epochs).",
    ]


def _limitations(config: HardenConfig) -> list[str]:
    threats = "; ".join(
        f"{md(t.name)} (attack {md(t.attack)}, budgets {', '.join(f'{b:g}' for b in t.budgets)})"
        for t in config.threats
    )
    return [
        "",
        "### Limitations",
        "",
        f"- The numbers hold for the threat model in the config only: {threats or 'no threats'}.",
        "- Robust accuracy under an attack is an upper bound: a stronger or adaptive attack "
        "may flip more inputs.",
        f"- The {config.policy.confidence:.0%} intervals cover sampling error only, on the "
        "evaluation data named above; other data may behave differently.",
    ]


def write_model_card(
    path: Path,
    config: HardenConfig,
    decision: GateDecision,
    findings: Findings | None = None,
    *,
    baseline: Mapping[str, Any] | None = None,
    reliability: Reliability | None = None,
) -> Path:
    text = model_card_section(
        config, decision, findings, baseline=baseline, reliability=reliability
    )
    return atomic_write(path, text)
