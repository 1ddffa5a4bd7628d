"""The summary at the top of the HTML page: the verdict, the checks that decide it, and
each of them for the baseline beside the candidate.

A failed gate is decided by what failed: the failed policy checks, the blocking findings no
failed check tells, the failed gate checks. A passed gate is decided by every check, all of
which passed. Only data and formatted text; the template lays it out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hardenml.gate import GateDecision
from hardenml.records import Measurement, fingerprint, metric_key
from hardenml.report.common import fmt, gate_checks, measurements


@dataclass(frozen=True)
class SummaryRow:
    """One deciding check; `baseline` and `change` are None when the page has no baseline."""

    name: str
    kind: str  # "policy check", "finding" or "gate check"
    detail: str
    candidate: str
    baseline: str | None
    change: str | None
    required: str
    passed: bool


@dataclass(frozen=True)
class SummaryView:
    status: str
    exit_code: int
    headline: str
    candidate: str
    baseline: str | None
    rows: list[SummaryRow]


def _value(m: Measurement | None) -> str:
    if m is None:
        return "not measured"
    return f"{fmt(m.value)} ({fmt(m.ci_low)} to {fmt(m.ci_high)})"


def _change(now: Measurement | None, before: Measurement | None) -> str:
    if now is None or before is None or not math.isfinite(now.value - before.value):
        return "-"
    return f"{now.value - before.value:+.3f}"


def _describe_baseline(baseline: Mapping[str, Any]) -> str:
    """Which model the candidate is compared with, in words."""
    sha = str(baseline.get("model_sha256", ""))[:12]
    what = "released model" if "gate_seq" in baseline else "previous model"
    return f"{what} {baseline.get('model')} (sha256 {sha}, run {baseline.get('run_id')})"


def summary_view(decision: GateDecision, baseline: Mapping[str, Any] | None) -> SummaryView:
    now = {m.key: m for m in measurements(decision.run.payload)}
    before = {m.key: m for m in measurements(baseline)} if baseline is not None else {}
    has_baseline = baseline is not None
    failed = not decision.passed
    rows: list[SummaryRow] = []
    told = set()
    for check in decision.checks:
        if failed and check.passed:
            continue
        m = check.measurement
        old = before.get(metric_key(check.metric, check.threat, check.budget))
        told.add(fingerprint(decision.run.model, check.threat, check.metric, check.budget))
        rows.append(
            SummaryRow(
                name=check.name,
                kind="policy check",
                detail="",
                candidate=_value(m),
                baseline=(_value(old) if old is not None else "-") if has_baseline else None,
                change=_change(m, old) if has_baseline else None,
                required=f"≥ {fmt(check.threshold)}",
                passed=check.passed,
            )
        )
    for f in decision.blocking_findings:
        if f.fingerprint in told:
            continue
        rows.append(
            SummaryRow(
                name=f.finding_id,
                kind="finding",
                detail=f"{f.severity}: {f.title}",
                candidate=fmt(f.value),
                baseline="-" if has_baseline else None,
                change="-" if has_baseline else None,
                required=f"≥ {fmt(f.threshold)}",
                passed=False,
            )
        )
    for g in gate_checks(decision):
        if failed and g.passed:
            continue
        key = g.name.removeprefix("regression[").removesuffix("]")
        m = now.get(key) if g.name.startswith("regression[") else None
        old = before.get(key) if m is not None else None
        rows.append(
            SummaryRow(
                name=g.name,
                kind="gate check",
                detail=g.reason,
                candidate=_value(m) if m is not None else "-",
                baseline=(_value(old) if old is not None else "-") if has_baseline else None,
                change=_change(m, old) if has_baseline else None,
                required="-",
                passed=g.passed,
            )
        )
    if failed:
        problems = sum(not r.passed for r in rows)
        headline = f"FAIL: {problems} {'problem blocks' if problems == 1 else 'problems block'} "
        headline += "the release."
    else:
        headline = f"PASS: all {len(rows)} checks hold."
    run = decision.run
    candidate = f"{run.model} (sha256 {run.model_sha256[:12]}, run {run.run_id})"
    return SummaryView(
        status=decision.status,
        exit_code=decision.exit_code,
        headline=headline,
        candidate=candidate,
        baseline=_describe_baseline(baseline) if baseline is not None else None,
        rows=rows,
    )
