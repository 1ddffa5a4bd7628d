"""JUnit XML as CI reads it, parsed with junitparser, over real scans and gates.

What GitLab and Jenkins use: a case's `time`, one case per problem (a failed check and its
finding are one), `[[ATTACHMENT|path]]` lines in `system-out` (paths relative to the
project folder), and `file`.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime
from pathlib import Path

import pytest
from junitparser import Failure, JUnitXml, TestCase, TestSuite
from torch import nn

from hardenml.gate import decide
from hardenml.report import JUNIT_NAME, junit_report
from hardenml.report.bundle import repo_root
from test_reports_support import Gated, gated_workspace

ATTACHMENT = re.compile(r"\[\[ATTACHMENT\|([^\]]+)\]\]")


@pytest.fixture(scope="module")
def image(digits_mlp: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Gated:
    return gated_workspace(tmp_path_factory.mktemp("junit-image"), digits_mlp, shape="[1, 8, 8]")


def _parse(text: str) -> JUnitXml:
    xml = JUnitXml.fromstring(text)
    assert isinstance(xml, JUnitXml)
    return xml


def _cases(xml: JUnitXml) -> dict[str, TestCase]:
    return {case.name: case for suite in xml for case in suite}


def test_each_case_takes_the_time_the_scan_spent_on_its_check(image: Gated) -> None:
    decision = image.decision
    seconds = decision.run.payload["scan"]["seconds"]
    units = {f"pgd-linf@{b:g}" for b in image.ws.config.threats[0].budgets}
    assert set(seconds["units"]) == units and all(v > 0 for v in seconds["units"].values())
    xml = _parse((image.reports / JUNIT_NAME).read_text())
    cases = _cases(xml)
    assert cases["clean_accuracy"].time == pytest.approx(seconds["clean"], abs=1e-3)
    robust = cases["robust_accuracy[pgd-linf@0.1]"]
    assert robust.time == pytest.approx(seconds["units"]["pgd-linf@0.1"], abs=1e-3)
    assert robust.time > 0
    policy = next(s for s in xml if s.name == "hardenml.policy")
    assert policy.time == pytest.approx(sum(c.time for c in policy), abs=2e-3)
    # The whole run, from the ledger's start and finish (to the second): at least the time
    # its checks took.
    run = decision.run.payload
    duration = datetime.fromisoformat(run["finished"]) - datetime.fromisoformat(run["started"])
    assert xml.time == pytest.approx(duration.total_seconds()) and xml.time >= policy.time - 1


def test_a_failed_check_and_its_finding_are_one_case_with_its_pictures_attached(
    image: Gated,
) -> None:
    decision = image.decision
    (finding,) = decision.blocking_findings
    xml = _parse((image.reports / JUNIT_NAME).read_text())
    assert sum(1 for suite in xml for _ in suite) == len(decision.checks) + len(
        decision.extra_checks
    )
    assert [s.name for s in xml] == ["hardenml.policy", "hardenml.gate"]
    case = _cases(xml)["robust_accuracy[pgd-linf@0.1]"]
    (failure,) = case.result
    assert isinstance(failure, Failure) and failure.type == "PolicyViolation"
    assert finding.finding_id in (failure.text or "")
    assert xml.failures == 1
    attached = ATTACHMENT.findall(case.system_out or "")
    thumbnails = [e["path"] for e in finding.evidence if e["kind"] == "thumbnail"]
    assert attached == thumbnails and len(attached) == 8
    # No git repository here: paths are relative to the config's folder, and they exist.
    assert repo_root(image.ws.config.root) is None
    for path in attached:
        assert (image.ws.config.root / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_case_names_the_config_and_its_policy_line(image: Gated) -> None:
    config = image.ws.config
    root = _parse((image.reports / JUNIT_NAME).read_text())
    for suite in root:
        for case in suite:
            assert case._elem.get("file") == "hardenml.toml"
    cases = _cases(root)
    line = cases["robust_accuracy[pgd-linf@0.1]"]._elem.get("line")
    assert line == str(config.key_lines["policy.robust[0]"])


def test_paths_are_relative_to_the_repository_when_there_is_one(
    image: Gated, tmp_path: Path
) -> None:
    checkout = image.ws.config.root.parent
    xml = junit_report(image.ws.config, image.decision, image.findings, repo_root=checkout)
    case = _cases(_parse(xml))["robust_accuracy[pgd-linf@0.1]"]
    folder = image.ws.config.root.name
    assert case._elem.get("file") == f"{folder}/hardenml.toml"
    assert all(p.startswith(f"{folder}/artifacts/") for p in ATTACHMENT.findall(case.system_out))


def test_a_blocking_finding_whose_check_now_passes_is_its_own_failing_case(image: Gated) -> None:
    """The threshold was lowered after the scan: the check passes, the critical finding is
    still open and fails the gate, so CI must show a failure."""
    config = image.ws.config
    robust = config.policy.robust[0]
    lowered = config.model_copy(
        update={
            "policy": config.policy.model_copy(
                update={"robust": [robust.model_copy(update={"min_accuracy": 0.0})]}
            )
        }
    )
    decision = decide(lowered, image.decision.run, image.findings)
    assert all(c.passed for c in decision.checks) and not decision.passed
    xml = _parse(junit_report(lowered, decision, image.findings))
    findings_suite = next(s for s in xml if s.name == "hardenml.findings")
    assert isinstance(findings_suite, TestSuite)
    (case,) = list(findings_suite)
    (finding,) = decision.blocking_findings
    assert case.name == f"{finding.finding_id} robust_accuracy[pgd-linf@0.1]"
    assert xml.failures == 1 and len(ATTACHMENT.findall(case.system_out or "")) == 8


def test_a_run_without_recorded_times_writes_no_time(image: Gated) -> None:
    payload = dict(image.decision.run.payload)
    payload["scan"] = {k: v for k, v in payload["scan"].items() if k != "seconds"}
    decision = dataclasses.replace(
        image.decision, run=dataclasses.replace(image.decision.run, payload=payload)
    )
    xml = _parse(junit_report(image.ws.config, decision, image.findings))
    assert all(case._elem.get("time") is None for suite in xml for case in suite)
