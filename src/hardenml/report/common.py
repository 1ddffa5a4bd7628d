"""What every report reads from the same records: findings of the run's model, curves by
threat, the config key a check comes from, atomic writes."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hardenml.config import CONFIG_FILENAME, HardenConfig
from hardenml.gate import GateDecision
from hardenml.gate.decision import GateCheck
from hardenml.ledger import FindingState
from hardenml.ledger.checkpoint import NOT_SIGNED_IN_REPORT, signed_in_report_note
from hardenml.records import Measurement
from hardenml.scan import PolicyCheck
from hardenml.threats import ThreatLookupError, threat_class

SEVERITY_ORDER = ("critical", "high", "medium", "low")


Findings = Mapping[str, FindingState] | Iterable[FindingState]


def finding_list(findings: Findings | None, decision: GateDecision) -> list[FindingState]:
    """The findings of the decided run's model: open ones first, worst first, then the rest.

    Without `findings` only the blocking findings the decision carries are known.
    """
    if findings is None:
        pool: list[FindingState] = list(decision.blocking_findings)
    elif isinstance(findings, Mapping):
        pool = list(findings.values())
    else:
        pool = list(findings)
    own = [f for f in pool if f.model == decision.run.model]
    return sorted(
        own,
        key=lambda f: (
            not f.is_open,
            SEVERITY_ORDER.index(f.severity) if f.severity in SEVERITY_ORDER else 99,
            f.finding_id,
        ),
    )


def check_reason(decision: GateDecision, check: PolicyCheck) -> str:
    """The gate's own words for a failed check, so CI shows what `hardenml gate` printed."""
    for reason in decision.reasons:
        if reason.startswith((f"{check.name} ", f"{check.name}:")):
            return reason
    if check.measurement is None:
        return f"{check.name}: not measured in run {decision.run.run_id}; rescan"
    m = check.measurement
    return (
        f"{check.name} = {m.value:.3f} (CI {m.ci_low:.3f}-{m.ci_high:.3f}, n={m.n}) "
        f"< required {check.threshold:.3f}"
    )


def status(f: FindingState) -> str:
    """The status a reader should see: an accepted risk past its date reads as open."""
    return f.status_on()


def gate_checks(decision: GateDecision) -> list[GateCheck]:
    """The gate's checks beyond the policy thresholds: validation, regression."""
    return list(decision.extra_checks)


def gate_check_key(config: HardenConfig, check: GateCheck) -> str:
    """The policy key a gate check comes from (`policy.max_regression`)."""
    base = check.name.split("[", 1)[0]
    key = {"validation": "policy.require_validation", "regression": "policy.max_regression"}.get(
        base, "policy"
    )
    return key if key in config.key_lines else "policy"


def anchor_note(decision: GateDecision) -> str:
    """What a report says about its ledger checkpoint: what the one it carries covers and
    how to check it, or that none was signed and what that leaves undetectable."""
    signed = decision.ledger_checkpoint
    return NOT_SIGNED_IN_REPORT if signed is None else signed_in_report_note(signed)


def blocking_ids(decision: GateDecision) -> set[str]:
    return {f.finding_id for f in decision.blocking_findings}


def measurements(payload: Mapping[str, Any]) -> list[Measurement]:
    return [Measurement.from_dict(m) for m in payload.get("measurements", [])]


def threat_attacks(config: HardenConfig, payload: Mapping[str, Any] | None) -> dict[str, str]:
    """Threat name -> attack, from the run's own config snapshot where it kept one."""
    attacks = {t.name: t.attack for t in config.threats}
    snapshot = (payload or {}).get("config") or {}
    for threat in snapshot.get("threats") or []:
        if isinstance(threat, Mapping) and "name" in threat and "attack" in threat:
            attacks[str(threat["name"])] = str(threat["attack"])
    return attacks


def is_corruption(attack: str | None) -> bool:
    """Whether a registered attack is a corruption (its budget is a severity, not an
    attacker's reach); False for one no longer registered."""
    if attack is None:
        return False
    try:
        return threat_class(attack).family == "corruption"
    except ThreatLookupError:
        return False


@dataclass(frozen=True)
class Curve:
    """One metric of one threat over its budgets, with clean accuracy as budget 0."""

    threat: str
    metric: str
    corruption: bool
    points: list[Measurement]


def curves(config: HardenConfig, payload: Mapping[str, Any] | None) -> dict[str, Curve]:
    """Curves by threat name; a threat at budget 0 is the clean model, so the curve starts
    at clean accuracy unless the run measured budget 0 itself."""
    if payload is None:
        return {}
    ms = measurements(payload)
    clean = next((m for m in ms if m.metric == "clean_accuracy" and m.threat is None), None)
    attacks = threat_attacks(config, payload)
    grouped: dict[str, list[Measurement]] = {}
    metric_of: dict[str, str] = {}
    for m in ms:
        if m.threat is None or m.budget is None or not math.isfinite(m.value):
            continue
        if m.metric != "robust_accuracy" and not m.metric.startswith("corruption"):
            continue
        grouped.setdefault(m.threat, []).append(m)
        metric_of[m.threat] = m.metric
    out: dict[str, Curve] = {}
    for threat, points in grouped.items():
        points.sort(key=lambda m: float(m.budget or 0.0))
        if clean is not None and all(m.budget != 0 for m in points):
            at_zero = replace(clean, metric=metric_of[threat], threat=threat, budget=0.0)
            points.insert(0, at_zero)
        corruption = is_corruption(attacks.get(threat)) or metric_of[threat].startswith(
            "corruption"
        )
        out[threat] = Curve(threat, metric_of[threat], corruption, points)
    return out


def policy_key(config: HardenConfig, metric: str, threat: str | None, budget: float | None) -> str:
    """The dotted config key of the policy line that governs a metric (`policy.robust[0]`,
    `behaviour[1]` for a behavioural suite)."""
    for i, suite in enumerate(config.behaviour):
        if suite.check_name == metric:
            return f"behaviour[{i}]"
    if threat is None:
        return f"policy.min_{metric}"
    for i, req in enumerate(config.policy.robust):
        if req.threat == threat and req.budget == budget:
            return f"policy.robust[{i}]"
    return threat_key(config, threat) or "policy"


def threat_key(config: HardenConfig, threat: str | None) -> str | None:
    for i, t in enumerate(config.threats):
        if t.name == threat:
            return f"threats[{i}]"
    return None


def measurement_key(metric: str, threat: str | None, budget: float | None) -> str:
    if threat is None:
        return metric
    return f"{metric}[{threat}@{budget if budget is None else format(budget, 'g')}]"


def shown_path(config: HardenConfig, path: Path | str, repo_root: Path | None) -> str:
    """A path as CI tools resolve it: relative to the repository root (GitLab's project
    folder, Jenkins' workspace), else to the config's folder; absolute when outside both.
    Relative `path`s are taken relative to the config's folder, as the ledger records them."""
    full = config.resolve(Path(path)).resolve()
    base = (repo_root or config.root).resolve()
    try:
        return full.relative_to(base).as_posix()
    except ValueError:
        return full.as_posix()


def config_path(config: HardenConfig, repo_root: Path | None) -> str:
    """The config file, as `shown_path` shows it (its `source` is relative to the working
    folder it was opened from, not to its own folder)."""
    source = config.source.resolve() if config.source is not None else Path(CONFIG_FILENAME)
    return shown_path(config, source, repo_root)


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def json_safe(obj: Any) -> Any:
    """`obj` with NaN and infinities as null: strict JSON readers reject them."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def atomic_write(path: Path, data: str | bytes) -> Path:
    """Write beside the target and rename, so a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    tmp.replace(path)
    return path
