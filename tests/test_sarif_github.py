"""SARIF as GitHub code scanning reads it, over a real scan and gate of the digits MLP.

What GitHub uses (docs.github.com, "SARIF support for code scanning"): alerts are matched
across runs by `partialFingerprints.primaryLocationLineHash` only; a rule's `help`,
`precision` and `security-severity` (read from the rule, not the result); a result's
`level`. Every log here is also validated against the OASIS schema.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from torch import nn

from hardenml.ledger import FindingState, findings_state
from hardenml.records import fingerprint
from hardenml.report import sarif_report
from hardenml.report.rule_help import DOCS_URL, FINDINGS_DOC
from hardenml.report.sarif import SECURITY_SEVERITY
from hardenml.workflow import Workspace, gate
from test_reports import validate_sarif
from test_reports_support import Gated, gated_workspace

DOCS = Path(__file__).parents[1] / "docs"
PRECISIONS = {"very-high", "high", "medium", "low"}


@pytest.fixture(scope="module")
def gated(digits_mlp: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Gated:
    return gated_workspace(tmp_path_factory.mktemp("sarif"), digits_mlp)


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces
    as hyphens."""
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", markdown, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
        anchors.add(slug.replace(" ", "-"))
    return anchors


def _with_budget(f: FindingState, budget: float, severity: str) -> FindingState:
    """The same kind of finding at another budget (so another problem, another id)."""
    fp = fingerprint(f.model, f.threat, f.metric, budget)
    return dataclasses.replace(
        f, budget=budget, severity=severity, fingerprint=fp, finding_id=f"HML-{fp[:8]}"
    )


def test_every_rule_has_help_a_docs_link_and_a_precision(gated: Gated) -> None:
    decision = gated.decision
    log = sarif_report(gated.ws.config, decision, gated.findings)
    validate_sarif(log)
    rules = log["runs"][0]["tool"]["driver"]["rules"]
    anchors = github_anchors((DOCS / FINDINGS_DOC).read_text())
    assert len(rules) == len(decision.checks) + len(decision.extra_checks)
    for rule in rules:
        assert rule["help"]["text"].strip() and rule["help"]["markdown"].startswith("## ")
        assert "How to fix" in rule["help"]["text"] and "### How to fix" in rule["help"]["markdown"]
        assert rule["properties"]["precision"] in PRECISIONS
        page, _, anchor = rule["helpUri"].partition("#")
        assert page == f"{DOCS_URL}/{FINDINGS_DOC}" and anchor in anchors, rule["helpUri"]
        assert rule["helpUri"] in rule["help"]["markdown"]
    robust = next(r for r in rules if r["id"] == "hardenml/robust_accuracy/pgd-linf@0.1")
    finding = decision.blocking_findings[0]
    # The finding's own remediation (the patches registered for this model) is in its help.
    assert finding.remediation in robust["help"]["markdown"]
    assert robust["properties"]["precision"] == "very-high"
    # The threat describes itself: a white-box attacker with L-infinity budget 0.1.
    assert (
        "white-box" in robust["fullDescription"]["text"]
        and "0.1" in robust["fullDescription"]["text"]
    )


def test_the_alert_keeps_its_fingerprint_and_rule_when_the_threshold_changes(
    digits_mlp: nn.Module, tmp_path: Path
) -> None:
    """GitHub would hash the policy line's text without our fingerprint: editing
    `min_accuracy` would close the alert and open another."""
    first = gated_workspace(tmp_path, digits_mlp)
    (before,) = sarif_report(first.ws.config, first.decision, first.findings)["runs"][0]["results"]
    config = first.ws.config.source
    assert config is not None
    config.write_text(config.read_text().replace("min_accuracy = 0.9", "min_accuracy = 0.85"))
    ws = Workspace.open(config)
    decision = gate(ws, rescan=True)
    assert decision.checks[1].threshold == 0.85 and not decision.passed
    log = sarif_report(ws.config, decision, findings_state(ws.ledger.events()))
    validate_sarif(log)
    (after,) = log["runs"][0]["results"]
    fp = decision.blocking_findings[0].fingerprint
    assert before["partialFingerprints"]["primaryLocationLineHash"] == fp
    assert after["partialFingerprints"]["primaryLocationLineHash"] == fp
    assert before["ruleId"] == after["ruleId"]


def test_security_severity_is_each_results_own(gated: Gated) -> None:
    critical = gated.decision.blocking_findings[0]
    assert critical.severity == "critical"
    medium = _with_budget(critical, 0.05, "medium")
    low = _with_budget(critical, 0.02, "low")
    log = sarif_report(gated.ws.config, gated.decision, [critical, medium, low])
    validate_sarif(log)
    (run,) = log["runs"]
    rules = run["tool"]["driver"]["rules"]
    by_budget = {r["properties"]["budget"]: r for r in run["results"]}
    for f in (critical, medium, low):
        result = by_budget[f.budget]
        expected = SECURITY_SEVERITY[f.severity]
        assert result["properties"]["security-severity"] == expected
        # GitHub reads the rule's: each problem has its own rule, so it is this result's.
        assert rules[result["ruleIndex"]]["properties"]["security-severity"] == expected
        assert sum(r["ruleId"] == result["ruleId"] for r in run["results"]) == 1
    assert len({r["ruleId"] for r in run["results"]}) == 3


def test_every_result_behind_a_gate_failure_is_an_error(gated: Gated) -> None:
    """A medium finding whose policy check failed fails the gate (`policy.fail_on` holds only
    critical and high, but the check itself fails it): `error`, not `warning`."""
    config, decision = gated.ws.config, gated.decision
    assert "medium" not in config.policy.fail_on
    failing = dataclasses.replace(decision.blocking_findings[0], severity="medium")
    aside = _with_budget(failing, 0.02, "medium")
    log = sarif_report(config, decision, [failing, aside])
    validate_sarif(log)
    levels = {r["properties"]["finding_id"]: r["level"] for r in log["runs"][0]["results"]}
    assert levels == {failing.finding_id: "error", aside.finding_id: "warning"}
    assert not decision.passed


def test_rule_help_links_point_at_the_documentation_url_the_package_declares() -> None:
    """One documentation address: pyproject's `Documentation` URL is where helpUri points."""
    import tomllib

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert project["project"]["urls"]["Documentation"] == DOCS_URL
    assert (Path(__file__).parents[1] / "docs" / FINDINGS_DOC).is_file()
