"""Findings as SARIF 2.1.0 results, so code-scanning dashboards list them.

SARIF 2.1.0 (OASIS standard, errata 01):
https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/sarif-v2.1.0-errata01-os-complete.html.
One rule per problem (a metric of a threat at a budget, a slice, a gate check), so that
each rule carries the severity of its one result: GitHub code scanning reads
`security-severity` from the rule only
(https://docs.github.com/en/code-security/code-scanning/integrating-with-code-scanning/sarif-support-for-code-scanning#reportingdescriptor-object).
One result per open finding of the run's model, plus one per failed check that has no open
finding (a check that was not measured, say) and one per failed gate check (validation,
regression). Results point at the policy line of `hardenml.toml` that the finding
violates, with the threat's own line as a related location, and carry the finding's
fingerprint as `primaryLocationLineHash`, the only partial fingerprint GitHub matches
alerts by: without it GitHub hashes the policy line's text, so editing a threshold would
close the alert and open another.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import quote

from hardenml._version import __version__
from hardenml.config import CONFIG_FILENAME, HardenConfig
from hardenml.gate import GateDecision
from hardenml.gate.decision import GateCheck
from hardenml.ledger import FindingState
from hardenml.ledger.checkpoint import REPORT_KEY
from hardenml.records import UnitKey, fingerprint
from hardenml.report.common import (
    Findings,
    anchor_note,
    atomic_write,
    blocking_ids,
    check_reason,
    finding_list,
    gate_check_key,
    gate_checks,
    json_safe,
    measurement_key,
    policy_key,
    status,
    threat_key,
)
from hardenml.report.rule_help import (
    CORRUPTION,
    RuleHelp,
    gate_help,
    rule_help,
    threat_sentence,
)
from hardenml.report.sarif_taxonomy import rule_relationships, sarif_taxonomies
from hardenml.scan import PolicyCheck
from hardenml.scan.policy import threat_taxonomy

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
LEVELS = {"critical": "error", "high": "error", "medium": "warning", "low": "note"}
# GitHub code scanning ranks security alerts by a rule's numeric `security-severity`:
# over 9.0 critical, 7.0 to 8.9 high, 4.0 to 6.9 medium, 0.1 to 3.9 low.
SECURITY_SEVERITY = {"critical": "9.5", "high": "8.0", "medium": "5.5", "low": "3.0"}
# The severity of a failed check that has no finding (one that was not measured): it fails
# the gate by itself.
CHECK_SEVERITY = "high"
# GitHub keeps the upload action from overwriting this key and matches alerts by it.
GITHUB_FINGERPRINT_KEY = "primaryLocationLineHash"
FINGERPRINT_KEY = "hardenmlFinding/v1"


def sarif_level(severity: str, *, fails_gate: bool = False) -> str:
    """`error` for anything that fails the gate, whatever its severity; else by severity."""
    return "error" if fails_gate else LEVELS.get(severity, "warning")


def rule_id(
    metric: str, threat: str | None = None, budget: float | None = None, slice_: str | None = None
) -> str:
    """One rule per problem: `hardenml/robust_accuracy/pgd-linf@0.1`, `hardenml/clean_accuracy`,
    `hardenml/slice_gap/pgd-linf@0.1/class=3`. Stable across runs, as GitHub requires."""
    parts = [metric]
    if threat is not None:
        parts.append(threat if budget is None else str(UnitKey(threat, budget)))
    if slice_ is not None:
        parts.append(slice_)
    return "hardenml/" + "/".join(parts)


def _fingerprints(value: str) -> dict[str, str]:
    return {GITHUB_FINGERPRINT_KEY: value, FINGERPRINT_KEY: value}


class _Locator:
    """Turns paths under the config's folder into SARIF artifact locations.

    With `repo_root` the URIs are relative to the repository (what GitHub resolves);
    without it they are relative to the folder holding the config.
    """

    def __init__(self, config: HardenConfig, repo_root: Path | None) -> None:
        self.config = config
        self.config_dir = config.root.resolve()
        self.base_id = "SRCROOT" if repo_root is not None else "CONFIGDIR"
        self.base = repo_root.resolve() if repo_root is not None else self.config_dir

    def base_ids(self) -> dict[str, Any]:
        return {self.base_id: {"uri": self.base.as_uri() + "/"}}

    def location(self, path: PurePath) -> dict[str, Any]:
        full = Path(path) if Path(path).is_absolute() else self.config_dir / path
        try:
            relative = full.relative_to(self.base)
        except ValueError:
            return {"uri": full.as_uri()}
        # RFC 3986 path characters stay as they are; ":" does not, since in a first
        # segment it would read as a scheme.
        return {"uri": quote(relative.as_posix(), safe="/@!$&'()*+,;="), "uriBaseId": self.base_id}

    def config_file(self) -> dict[str, Any]:
        source = self.config.source
        return self.location(
            Path(source).resolve() if source is not None else PurePath(CONFIG_FILENAME)
        )

    def config_line(self, key: str | None, message: str) -> dict[str, Any]:
        physical: dict[str, Any] = {"artifactLocation": self.config_file()}
        line = self.config.key_lines.get(key) if key else None
        if line:
            physical["region"] = {"startLine": line}
        return {"physicalLocation": physical, "message": {"text": message}}


def sarif_report(
    config: HardenConfig,
    decision: GateDecision,
    findings: Findings | None = None,
    *,
    repo_root: Path | None = None,
) -> dict[str, Any]:
    """The SARIF log of one gate decision (pure: reads no files)."""
    loc = _Locator(config, repo_root)
    own = [f for f in finding_list(findings, decision) if f.is_open]
    blocking = blocking_ids(decision)
    failed_checks = {_check_fingerprint(decision, c) for c in decision.checks if not c.passed}
    rules: dict[str, dict[str, Any]] = {}
    taxa: dict[str, list[str]] = {}  # taxonomy -> the ids the rules relate to, in order
    results: list[dict[str, Any]] = []
    for f in own:
        rule = _rule(rules, config, f.metric, f.threat, f.budget, f.slice, f.remediation)
        _relate(rule, f.taxonomy or threat_taxonomy(config, [f.threat]), taxa)
        fails_gate = f.finding_id in blocking or f.fingerprint in failed_checks
        results.append(_finding_result(config, loc, rule, f, blocking=fails_gate))
    covered = {f.finding_id for f in own}
    for check in decision.checks:
        rule = _rule(rules, config, check.metric, check.threat, check.budget, None, None)
        _relate(rule, threat_taxonomy(config, [check.threat]), taxa)
        if check.passed or f"HML-{_check_fingerprint(decision, check)[:8]}" in covered:
            continue
        results.append(_check_result(config, loc, rule, decision, check))
    for gate_check in gate_checks(decision):
        gate_rule = _gate_rule(rules, gate_check)
        if not gate_check.passed:
            results.append(_gate_result(config, loc, gate_rule, decision, gate_check))
    ordered = list(rules)
    for result in results:
        result["ruleIndex"] = ordered.index(result["ruleId"])
    run = decision.run.payload
    artifacts = [
        {
            "location": loc.location(config.model.path or Path(config.model.name)),
            "roles": ["analysisTarget"],
            "hashes": {"sha-256": decision.run.model_sha256},
            "description": {"text": f"model {decision.run.model}"},
        },
        {
            "location": loc.config_file(),
            "roles": ["policy"],
            "description": {"text": "threat model and release policy"},
        },
    ]
    log = {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "hardenml",
                        "version": __version__,
                        "semanticVersion": __version__,
                        "rules": list(rules.values()),
                    }
                },
                "automationDetails": {
                    "id": f"hardenml/{config.project.name}/{decision.run.model}/{run['run_id']}"
                },
                "taxonomies": sarif_taxonomies(taxa),
                "invocations": [_invocation(decision)],
                "originalUriBaseIds": loc.base_ids(),
                "artifacts": artifacts,
                "results": results,
                "columnKind": "unicodeCodePoints",
                "properties": {
                    "project": config.project.name,
                    "model": decision.run.model,
                    "run_id": run["run_id"],
                    "seed": run.get("seed"),
                    "n": run.get("n"),
                    "data_sha256": run.get("data_sha256"),
                    "gate": {
                        "status": decision.status,
                        "exit_code": decision.exit_code,
                        "reasons": decision.reasons,
                    },
                    REPORT_KEY: decision.ledger_checkpoint,
                    "ledger_anchor": anchor_note(decision),
                },
            }
        ],
    }
    return dict(json_safe(log))


def _invocation(decision: GateDecision) -> dict[str, Any]:
    out: dict[str, Any] = {"executionSuccessful": True, "exitCode": decision.exit_code}
    for key, ts in (
        ("startTimeUtc", decision.run.payload.get("started")),
        ("endTimeUtc", decision.decided_at),
    ):
        stamp = _utc(ts)
        if stamp is not None:
            out[key] = stamp
    return out


def _rule(
    rules: dict[str, dict[str, Any]],
    config: HardenConfig,
    metric: str,
    threat: str | None,
    budget: float | None,
    slice_: str | None,
    remediation: str | None,
) -> dict[str, Any]:
    rid = rule_id(metric, threat, budget, slice_)
    if rid in rules:
        return rules[rid]
    attack = next((t.attack for t in config.threats if t.name == threat), None)
    helped = rule_help(config, metric, threat)
    short, full = _describe(config, metric, threat, budget, slice_, helped)
    rule: dict[str, Any] = {
        "id": rid,
        "name": rid.removeprefix("hardenml/").replace("/", "-"),
        "shortDescription": {"text": short},
        "fullDescription": {"text": full},
        "defaultConfiguration": {"level": "error"},
        "help": {"text": helped.text(remediation), "markdown": helped.markdown(remediation)},
        "helpUri": helped.uri,
        "properties": {
            "tags": ["security", "ml-robustness", metric],
            "precision": helped.precision,
            "metric": metric,
            "threat": threat,
            "budget": budget,
            "attack": attack,
        },
    }
    rules[rid] = rule
    return rule


def _relate(rule: dict[str, Any], taxonomy: dict[str, Any], taxa: dict[str, list[str]]) -> None:
    """Relate a rule to its threat's ATLAS and OWASP taxa (once: a rule may have several
    results, and the first to name taxa decides)."""
    if taxonomy and "relationships" not in rule:
        rule["relationships"] = rule_relationships(taxonomy, taxa)
        rule["properties"]["taxonomy_mapping"] = taxonomy.get("mapping_version")


def _describe(
    config: HardenConfig,
    metric: str,
    threat: str | None,
    budget: float | None,
    slice_: str | None,
    helped: RuleHelp,
) -> tuple[str, str]:
    """The rule's short and full description, in the words of its suite or threat."""
    suite = config.behaviour_suite(metric)
    if suite is not None:
        short = f"Behavioural suite {suite.name} ({suite.kind}) fails"
        full = f"The model fails the {suite.kind} behavioural suite {suite.name!r}: " + (
            f"its accuracy is below {suite.threshold:g}."
            if suite.kind == "minimum"
            else f"more than {suite.max_failure_rate:g} of the tested inputs fail it."
        )
        return short, full
    where = f" (slice {slice_})" if slice_ else ""
    if threat is None or budget is None:
        return f"{helped.title}{where}", helped.meaning
    at = f"severity {budget:g}" if helped is CORRUPTION else f"budget {budget:g}"
    who = threat_sentence(config, threat, budget)
    full = f"{helped.meaning} Threat {threat} at {at}" + (f": {who}." if who else ".")
    return f"{helped.title}: {threat} at {at}{where}", full


def _gate_rule(rules: dict[str, dict[str, Any]], check: GateCheck) -> dict[str, Any]:
    base = check.name.split("[", 1)[0]
    rid = f"hardenml/gate/{base}"
    if rid not in rules:
        helped = gate_help(base)
        rules[rid] = {
            "id": rid,
            "name": f"gate-{base}",
            "shortDescription": {"text": f"Release gate check {base} failed"},
            "fullDescription": {"text": helped.meaning},
            "defaultConfiguration": {"level": "error"},
            "help": {"text": helped.text(), "markdown": helped.markdown()},
            "helpUri": helped.uri,
            "properties": {
                "tags": ["security", "ml-robustness", "release-gate"],
                "precision": helped.precision,
            },
        }
    return rules[rid]


def _gate_result(
    config: HardenConfig,
    loc: _Locator,
    rule: dict[str, Any],
    decision: GateDecision,
    check: GateCheck,
) -> dict[str, Any]:
    key = gate_check_key(config, check)
    identity = f"{decision.run.model}|gate|{check.name}"
    return {
        "ruleId": rule["id"],
        "kind": "fail",
        "level": "error",
        "message": {"text": f"{check.name}: {check.reason}"},
        "locations": [loc.config_line(key, f"policy key {key}")],
        "partialFingerprints": _fingerprints(hashlib.sha256(identity.encode()).hexdigest()[:16]),
        "properties": {
            "check": check.name,
            "model_sha256": decision.run.model_sha256,
            **_severity(rule, CHECK_SEVERITY),
        },
    }


def _severity(rule: dict[str, Any], severity: str) -> dict[str, str]:
    """The result's `security-severity`, also set on its rule, where GitHub reads it. A rule
    has one result, except a gate rule, whose results all have the same severity."""
    score = SECURITY_SEVERITY.get(severity, SECURITY_SEVERITY["medium"])
    rule["properties"]["security-severity"] = score
    return {"security-severity": score}


def _locations(
    config: HardenConfig, loc: _Locator, metric: str, threat: str | None, budget: float | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    key = policy_key(config, metric, threat, budget)
    primary = loc.config_line(key, f"policy key {key}")
    related = []
    tkey = threat_key(config, threat)
    if tkey and tkey != key:
        related.append({"id": 0, **loc.config_line(tkey, f"threat {threat} ({tkey})")})
    return [primary], related


def _finding_result(
    config: HardenConfig, loc: _Locator, rule: dict[str, Any], f: FindingState, *, blocking: bool
) -> dict[str, Any]:
    """A finding; `blocking` when the gate fails because of it (its severity is in
    `policy.fail_on`, or the check it is about failed)."""
    locations, related = _locations(config, loc, f.metric, f.threat, f.budget)
    result: dict[str, Any] = {
        "ruleId": rule["id"],
        "kind": "fail",
        "level": sarif_level(f.severity, fails_gate=blocking),
        "message": {
            "text": f"{f.finding_id}: {f.title}. {f.exploitation} Remediation: {f.remediation}"
        },
        "locations": locations,
        "partialFingerprints": _fingerprints(f.fingerprint),
        "properties": {
            **_severity(rule, f.severity),
            "finding_id": f.finding_id,
            "severity": f.severity,
            "status": status(f),
            "blocking": blocking,
            "owner": f.owner,
            "due": f.due,
            "metric": f.metric,
            "threat": f.threat,
            "budget": f.budget,
            "value": f.value,
            "threshold": f.threshold,
            "ci": list(f.ci),
            "slice": f.slice,
            "opened": f.opened,
        },
    }
    if related:
        result["relatedLocations"] = related
    attachments = [
        {
            "description": {
                "text": f"{e.get('count', '?')} adversarial examples beside their originals "
                f"(sha256 {e.get('sha256', 'unknown')})"
            },
            "artifactLocation": loc.location(PurePath(str(e["path"]))),
        }
        for e in f.evidence
        if e.get("path")
    ]
    if attachments:
        result["attachments"] = attachments
    return result


def _check_result(
    config: HardenConfig,
    loc: _Locator,
    rule: dict[str, Any],
    decision: GateDecision,
    check: PolicyCheck,
) -> dict[str, Any]:
    locations, related = _locations(config, loc, check.metric, check.threat, check.budget)
    m = check.measurement
    text = check_reason(decision, check)
    result: dict[str, Any] = {
        "ruleId": rule["id"],
        "kind": "fail",
        "level": "error",
        "message": {"text": text},
        "locations": locations,
        "partialFingerprints": _fingerprints(_check_fingerprint(decision, check)),
        "properties": {
            **_severity(rule, CHECK_SEVERITY),
            "check": check.name,
            "measured": m is not None,
            "key": measurement_key(check.metric, check.threat, check.budget),
            "threshold": check.threshold,
        },
    }
    if related:
        result["relatedLocations"] = related
    return result


def _check_fingerprint(decision: GateDecision, check: PolicyCheck) -> str:
    """The fingerprint a finding for this check carries, so both map to one alert."""
    return fingerprint(decision.run.model, check.threat, check.metric, check.budget)


def _utc(ts: object) -> str | None:
    try:
        parsed = datetime.fromisoformat(str(ts))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_sarif(
    path: Path,
    config: HardenConfig,
    decision: GateDecision,
    findings: Findings | None = None,
    *,
    repo_root: Path | None = None,
) -> Path:
    log = sarif_report(config, decision, findings, repo_root=repo_root)
    return atomic_write(path, json.dumps(log, indent=2, allow_nan=False) + "\n")
