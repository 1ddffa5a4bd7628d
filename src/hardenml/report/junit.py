"""The gate as JUnit XML, so CI systems list each problem as a test.

Layout follows the de-facto JUnit schema that Jenkins, GitLab and GitHub test reporters
read (https://github.com/testmoapp/junitxml): `testsuites > testsuite > testcase`, a
`failure` element with `message` and `type` for each failed case. One case per problem: a
failed policy check and the finding it opened are one case (the check's, whose name stays
the same from run to run), and a blocking finding without a policy check (a slice gap, an
unreliable evaluation) is a case of its own. `time` is what the scan spent on the check
(the threat at that budget, the clean passes, the suite), from the run's `scan.seconds`;
evidence pictures are attached with `[[ATTACHMENT|path]]` lines in `system-out`, which
GitLab and Jenkins' JUnit Attachments plugin show beside the test; `file` and `line` name
the policy line in `hardenml.toml`.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from hardenml.config import HardenConfig
from hardenml.gate import GateDecision
from hardenml.gate.decision import GateCheck
from hardenml.ledger import FindingState
from hardenml.ledger.checkpoint import REPORT_KEY
from hardenml.records import UnitKey, fingerprint
from hardenml.report.common import (
    Findings,
    anchor_note,
    atomic_write,
    check_reason,
    config_path,
    finding_list,
    fmt,
    gate_check_key,
    gate_checks,
    measurement_key,
    policy_key,
    shown_path,
    status,
)
from hardenml.scan import PolicyCheck

# Characters XML 1.0 cannot carry at all, even escaped.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# Evidence kinds that are pictures a CI page can show.
ATTACHED_KINDS = ("thumbnail", "attribution_map")


def _x(text: object) -> str:
    return _NOT_XML.sub("\ufffd", str(text))


def _seconds(start: str, end: str) -> float:
    try:
        return max(
            0.0, (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
        )
    except (TypeError, ValueError):
        return 0.0


class _Where:
    """The config file and the repository root, for `file`, `line` and attachment paths."""

    def __init__(self, config: HardenConfig, repo_root: Path | None) -> None:
        self.config = config
        self.repo_root = repo_root
        self.file = config_path(config, repo_root)

    def place(self, case: ET.Element, key: str) -> None:
        case.set("file", _x(self.file))
        line = self.config.key_lines.get(key)
        if line:
            case.set("line", str(line))

    def attachments(self, f: FindingState | None) -> list[str]:
        if f is None:
            return []
        return [
            f"[[ATTACHMENT|{shown_path(self.config, str(e['path']), self.repo_root)}]]"
            for e in f.evidence
            if e.get("kind") in ATTACHED_KINDS and e.get("path")
        ]


def junit_report(
    config: HardenConfig,
    decision: GateDecision,
    findings: Findings | None = None,
    *,
    repo_root: Path | None = None,
) -> str:
    """One test case per policy check and gate check (validation, regression), and one per
    blocking finding that no policy check covers. `findings` are the ledger's (without
    them, only the decision's blocking findings are known); `repo_root` makes paths
    relative to the repository."""
    run = decision.run.payload
    where = _Where(config, repo_root)
    open_findings = {f.fingerprint: f for f in finding_list(findings, decision) if f.is_open}
    seconds = (run.get("scan") or {}).get("seconds") or {}
    root = ET.Element("testsuites", name=_x(f"hardenml gate: {config.project.name}"))
    policy = _policy_suite(config, decision, where, open_findings, seconds)
    # A blocking finding is told in its check's case only when that case fails; a finding
    # still open while its check now passes (a threshold lowered since the scan) fails the
    # gate by itself, so it gets a case of its own.
    covered = {
        fingerprint(decision.run.model, c.threat, c.metric, c.budget)
        for c in decision.checks
        if not c.passed
    }
    suites = [policy]
    if gate_checks(decision):
        suites.append(_gate_suite(config, decision, where))
    uncovered = [f for f in decision.blocking_findings if f.fingerprint not in covered]
    if uncovered:
        suites.append(_findings_suite(decision, where, config, uncovered, seconds))
    root.extend(suites)
    for attr in ("tests", "failures"):
        root.set(attr, str(sum(int(s.get(attr, "0")) for s in suites)))
    root.set("errors", "0")
    duration = _seconds(str(run.get("started", "")), str(run.get("finished", "")))
    root.set("time", f"{duration:.3f}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _suite(name: str, decision: GateDecision, cases: int, failures: int) -> ET.Element:
    return ET.Element(
        "testsuite",
        name=name,
        tests=str(cases),
        failures=str(failures),
        errors="0",
        skipped="0",
        timestamp=_x(decision.decided_at),
    )


def _case(suite: ET.Element, classname: str, name: str, seconds: float | None) -> ET.Element:
    """A test case; `time` only when the run recorded how long its work took."""
    case = ET.SubElement(suite, "testcase", classname=_x(classname), name=_x(name))
    if seconds is not None:
        case.set("time", f"{seconds:.3f}")
    return case


def _total_time(suite: ET.Element) -> None:
    times = [float(c.get("time", "0")) for c in suite.iter("testcase")]
    suite.set("time", f"{sum(times):.3f}")


def check_seconds(check: PolicyCheck, seconds: Mapping[str, Any]) -> float | None:
    """How long the scan spent measuring a check's metric: the clean forward passes, the
    threat at the check's budget, or the behavioural suite; None when not recorded."""
    if check.metric == "clean_accuracy" and "clean" in seconds:
        return float(seconds["clean"])
    if check.threat is not None and check.budget is not None:
        unit = (seconds.get("units") or {}).get(str(UnitKey(check.threat, check.budget)))
        return None if unit is None else float(unit)
    suites = seconds.get("behaviour") or {}
    name = check.metric.removeprefix("behaviour[").removesuffix("]")
    return float(suites[name]) if check.metric.startswith("behaviour[") and name in suites else None


def finding_seconds(f: FindingState, seconds: Mapping[str, Any]) -> float | None:
    """How long the scan spent on the work that found `f` (integrity checks of its threat,
    the analysis for a slice gap); None when not recorded."""
    if f.metric.startswith("integrity:"):
        value = (seconds.get("integrity") or {}).get(f.threat or "")
        return None if value is None else float(value)
    if f.metric == "slice_gap" and "analysis" in seconds:
        return float(seconds["analysis"])
    return None


def _policy_suite(
    config: HardenConfig,
    decision: GateDecision,
    where: _Where,
    open_findings: Mapping[str, FindingState],
    seconds: Mapping[str, Any],
) -> ET.Element:
    checks = decision.checks
    suite = _suite("hardenml.policy", decision, len(checks), sum(not c.passed for c in checks))
    run = decision.run.payload
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("project", config.project.name),
        ("model", decision.run.model),
        ("model_sha256", decision.run.model_sha256),
        ("run_id", decision.run.run_id),
        ("data_sha256", run.get("data_sha256", "")),
        ("seed", run.get("seed", "")),
        ("n", run.get("n", "")),
        ("gate_status", decision.status),
        ("gate_exit_code", decision.exit_code),
        ("ledger_anchor", anchor_note(decision)),
    ):
        ET.SubElement(props, "property", name=name, value=_x(value))
    if decision.ledger_checkpoint is not None:
        # Compact JSON in one attribute, so `hardenml ledger verify --checkpoint report.xml`
        # reads it back exactly as signed.
        signed = json.dumps(decision.ledger_checkpoint, sort_keys=True, separators=(",", ":"))
        ET.SubElement(props, "property", name=REPORT_KEY, value=_x(signed))
    for check in checks:
        case = _case(
            suite, f"hardenml.policy.{config.model.name}", check.name, check_seconds(check, seconds)
        )
        where.place(case, policy_key(config, check.metric, check.threat, check.budget))
        detail = _check_detail(check)
        if check.passed:
            ET.SubElement(case, "system-out").text = _x(detail)
            continue
        finding = open_findings.get(
            fingerprint(decision.run.model, check.threat, check.metric, check.budget)
        )
        kind = (
            "NotMeasured"
            if check.measurement is None
            else "Undecided"
            if check.decision == "undecided"
            else "PolicyViolation"
        )
        failure = ET.SubElement(
            case, "failure", message=_x(check_reason(decision, check)), type=kind
        )
        body = [detail] + ([_finding_detail(finding)] if finding is not None else [])
        failure.text = _x("\n".join(body))
        attached = where.attachments(finding)
        if attached:
            ET.SubElement(case, "system-out").text = _x("\n".join(attached))
    _total_time(suite)
    return suite


def _gate_suite(config: HardenConfig, decision: GateDecision, where: _Where) -> ET.Element:
    checks: list[GateCheck] = gate_checks(decision)
    suite = _suite("hardenml.gate", decision, len(checks), sum(not c.passed for c in checks))
    for check in checks:
        # Decided from ledger records, not measured: no time of their own to report.
        case = _case(suite, f"hardenml.gate.{config.model.name}", check.name, None)
        where.place(case, gate_check_key(config, check))
        if check.passed:
            ET.SubElement(case, "system-out").text = _x(check.reason)
        else:
            failure = ET.SubElement(
                case, "failure", message=_x(f"{check.name}: {check.reason}"), type="GateCheck"
            )
            failure.text = _x(check.reason)
    _total_time(suite)
    return suite


def _check_detail(check: PolicyCheck) -> str:
    m = check.measurement
    if m is None:
        return f"required {check.name} >= {check.threshold:.3f}; the run has no such measurement"
    return (
        f"measured {m.value:.4f}, {m.confidence:.0%} CI [{m.ci_low:.4f}, {m.ci_high:.4f}], "
        f"n={m.n}, seed={m.seed}; required >= {check.threshold:.4f}; "
        f"shortfall {fmt(check.shortfall, 4)}"
    )


def _findings_suite(
    decision: GateDecision,
    where: _Where,
    config: HardenConfig,
    blocking: list[FindingState],
    seconds: Mapping[str, Any],
) -> ET.Element:
    suite = _suite("hardenml.findings", decision, len(blocking), len(blocking))
    for f in blocking:
        # The name holds only what identifies the finding, so CI keeps its history
        # across runs even as the measured value moves.
        case = _case(
            suite,
            f"hardenml.findings.{f.model}",
            f"{f.finding_id} {measurement_key(f.metric, f.threat, f.budget)}",
            finding_seconds(f, seconds),
        )
        where.place(case, policy_key(config, f.metric, f.threat, f.budget))
        failure = ET.SubElement(
            case,
            "failure",
            message=_x(f"open {f.severity} finding {f.finding_id}: {f.title}"),
            type=_x(f.severity),
        )
        failure.text = _x(_finding_detail(f))
        attached = where.attachments(f)
        if attached:
            ET.SubElement(case, "system-out").text = _x("\n".join(attached))
    _total_time(suite)
    return suite


def _finding_detail(f: FindingState) -> str:
    lines = [
        f"finding {f.finding_id} ({f.severity}): {f.title}",
        f"status: {status(f)}; owner: {f.owner}; due: {f.due}",
        f"measured {f.value:.4f}, CI [{fmt(f.ci[0], 4)}, {fmt(f.ci[1], 4)}], "
        f"required >= {f.threshold:.4f}",
        f"exploitation: {f.exploitation}",
        f"remediation: {f.remediation}",
    ]
    lines += [f"evidence: {e.get('path')} (sha256 {e.get('sha256')})" for e in f.evidence]
    return "\n".join(lines)


def write_junit(
    path: Path,
    config: HardenConfig,
    decision: GateDecision,
    findings: Findings | None = None,
    *,
    repo_root: Path | None = None,
) -> Path:
    return atomic_write(path, junit_report(config, decision, findings, repo_root=repo_root))
