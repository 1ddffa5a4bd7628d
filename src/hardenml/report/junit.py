"""The gate as JUnit XML, so CI systems list each policy check and blocking finding as a test.

Layout follows the de-facto JUnit schema that Jenkins, GitLab and GitHub test reporters
read (https://github.com/testmoapp/junitxml): `testsuites > testsuite > testcase`, a
`failure` element with `message` and `type` for each failed case.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

from hardenml.config import HardenConfig
from hardenml.gate import GateDecision
from hardenml.ledger import FindingState
from hardenml.report.common import (
    atomic_write,
    check_reason,
    fmt,
    gate_checks,
    measurement_key,
    status,
)
from hardenml.scan import PolicyCheck

# Characters XML 1.0 cannot carry at all, even escaped.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _x(text: object) -> str:
    return _NOT_XML.sub("\ufffd", str(text))


def _seconds(start: str, end: str) -> float:
    try:
        return max(
            0.0, (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
        )
    except (TypeError, ValueError):
        return 0.0


def junit_report(config: HardenConfig, decision: GateDecision) -> str:
    """One test case per policy check and gate check (validation, regression), one failing
    test case per blocking finding."""
    run = decision.run.payload
    root = ET.Element("testsuites", name=_x(f"hardenml gate: {config.project.name}"))
    suites = [_policy_suite(config, decision)]
    if gate_checks(decision):
        suites.append(_gate_suite(config, decision))
    if decision.blocking_findings:
        suites.append(_findings_suite(decision))
    duration = _seconds(str(run.get("started", "")), str(run.get("finished", "")))
    suites[0].set("time", f"{duration:.3f}")
    root.extend(suites)
    for attr in ("tests", "failures"):
        root.set(attr, str(sum(int(s.get(attr, "0")) for s in suites)))
    root.set("errors", "0")
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
        time="0",
        timestamp=_x(decision.decided_at),
    )


def _policy_suite(config: HardenConfig, decision: GateDecision) -> ET.Element:
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
    ):
        ET.SubElement(props, "property", name=name, value=_x(value))
    for check in checks:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=_x(f"hardenml.policy.{config.model.name}"),
            name=_x(check.name),
            time="0",
        )
        detail = _check_detail(check)
        if not check.passed:
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
            failure.text = _x(detail)
        else:
            ET.SubElement(case, "system-out").text = _x(detail)
    return suite


def _gate_suite(config: HardenConfig, decision: GateDecision) -> ET.Element:
    checks = gate_checks(decision)
    suite = _suite("hardenml.gate", decision, len(checks), sum(not c.passed for c in checks))
    for check in checks:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=_x(f"hardenml.gate.{config.model.name}"),
            name=_x(check.name),
            time="0",
        )
        if check.passed:
            ET.SubElement(case, "system-out").text = _x(check.reason)
        else:
            failure = ET.SubElement(
                case, "failure", message=_x(f"{check.name}: {check.reason}"), type="GateCheck"
            )
            failure.text = _x(check.reason)
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


def _findings_suite(decision: GateDecision) -> ET.Element:
    blocking = decision.blocking_findings
    suite = _suite("hardenml.findings", decision, len(blocking), len(blocking))
    for f in blocking:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=_x(f"hardenml.findings.{f.model}"),
            # The name holds only what identifies the finding, so CI keeps its history
            # across runs even as the measured value moves.
            name=_x(f"{f.finding_id} {measurement_key(f.metric, f.threat, f.budget)}"),
            time="0",
        )
        failure = ET.SubElement(
            case,
            "failure",
            message=_x(f"open {f.severity} finding {f.finding_id}: {f.title}"),
            type=_x(f.severity),
        )
        failure.text = _x(_finding_detail(f))
    return suite


def _finding_detail(f: FindingState) -> str:
    lines = [
        f"status: {status(f)}; owner: {f.owner}; due: {f.due}",
        f"measured {f.value:.4f}, CI [{fmt(f.ci[0], 4)}, {fmt(f.ci[1], 4)}], "
        f"required >= {f.threshold:.4f}",
        f"exploitation: {f.exploitation}",
        f"remediation: {f.remediation}",
    ]
    lines += [f"evidence: {e.get('path')} (sha256 {e.get('sha256')})" for e in f.evidence]
    return "\n".join(lines)


def write_junit(path: Path, config: HardenConfig, decision: GateDecision) -> Path:
    return atomic_write(path, junit_report(config, decision))
