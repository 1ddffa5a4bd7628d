"""Policy -> verdict -> exit code.

The gate combines four things: the policy's thresholds over the latest run's
measurements, the open findings (a finding of a `policy.fail_on` severity that is open,
i.e. neither fixed nor accepted, fails it), the validator's verdict for this exact model
(a failed `hardenml validate` fails it), and regression against the last released model
recorded in the ledger (no metric may fall more than `policy.max_regression` below it).
It decides only on a ledger whose hash chain it has verified, and records that chain's
head, so the decision can be checked against the ledger later.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from hardenml.config import HardenConfig
from hardenml.ledger import ChainHead, Event, FindingState, RunRecord
from hardenml.records import LOWER_IS_BETTER, MODEL_RELEASED, Measurement, ModelReleased
from hardenml.scan import PolicyCheck, SharedThreatModel, checks_for
from hardenml.scan.policy import behaviour_reason

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
# An unexpected exception: a bug of ours or of a plugin, never a verdict.
EXIT_INTERNAL = 3
# The ledger's hash chain is broken, so the gate refuses to decide. The same code as a
# failing policy and as `hardenml ledger verify` finding tampering: CI must stop either way.
EXIT_TAMPERED = 1

VALIDATION_EVENT = "validation.completed"
RELEASE_EVENT = MODEL_RELEASED


class ReleaseError(Exception):
    """A model cannot be released as asked; the message says why and what to do."""


@dataclass(frozen=True)
class GateCheck:
    """A gate check beyond the policy thresholds (validation, regression), with its reason."""

    name: str
    passed: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GateDecision:
    passed: bool
    checks: list[PolicyCheck]
    blocking_findings: list[FindingState]
    run: RunRecord
    reasons: list[str]
    decided_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    # Validation and regression checks, each with its reason.
    extra_checks: list[GateCheck] = field(default_factory=list)
    # The `hardenml validate` verdict for this model (ledger payload), if one was recorded.
    validation: dict[str, Any] | None = None
    # The last `hardenml release` of this model name (ledger payload), if any.
    released: ModelReleased | None = None
    # How the policy is looser than at that release (see `policy_loosening`); reported,
    # recorded as a `policy.loosened` event, and never silent.
    loosened: list[str] = field(default_factory=list)
    # The verified chain the decision read: its `gate.decided` event is chained after it.
    ledger_head: ChainHead | None = None
    # That chain's signed checkpoint (ledger/checkpoint.py), when a signing key was
    # configured; every report carries it, so CI artifacts hold copies outside the ledger.
    ledger_checkpoint: dict[str, Any] | None = None
    # The (epsilon, delta) the decided model's training spent, from its `model.patched`
    # lineage (`metrics.privacy` of the dp_sgd patch); None when no guarantee is recorded.
    privacy: dict[str, Any] | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_PASS if self.passed else EXIT_FAIL

    @property
    def status(self) -> str:
        return "pass" if self.passed else "fail"


def latest_validation(events: list[Event], model_sha256: str) -> dict[str, Any] | None:
    """The latest validator verdict whose candidate is this model file."""
    for event in reversed(events):
        if event.kind == VALIDATION_EVENT and event.payload["candidate_sha256"] == model_sha256:
            return {**event.payload, "ledger_seq": event.seq}
    return None


def last_release(events: list[Event], model: str) -> ModelReleased | None:
    """The latest release of the model called `model`."""
    for event in reversed(events):
        if event.kind == RELEASE_EVENT and event.payload["model"] == model:
            return ModelReleased.from_payload(event.payload, seq=event.seq)
    return None


def decide(
    config: HardenConfig,
    run: RunRecord,
    findings: dict[str, FindingState],
    *,
    validation: dict[str, Any] | None = None,
    released: ModelReleased | None = None,
    ledger_head: ChainHead | None = None,
    ledger_checkpoint: dict[str, Any] | None = None,
    privacy: dict[str, Any] | None = None,
) -> GateDecision:
    """Evaluate today's policy against the run's measurements, the open findings, the
    validator's verdict for this model and the last released model, all read from the
    verified ledger whose head is `ledger_head` (and whose signed checkpoint, when the
    caller signed one, is `ledger_checkpoint`)."""
    completed = run.completed
    measurements = completed.measurements
    scan_info = completed.scan
    checks = checks_for(
        config,
        measurements,
        sequential=bool(scan_info.get("sequential")),
        n_max=int(scan_info.get("n_max", 0)),
        # The grouping the scan recorded: the run's worst cases are over those threats.
        threat_models=[SharedThreatModel.from_dict(d) for d in scan_info.get("threat_models", [])],
    )
    reasons = []
    for check in checks:
        if check.measurement is None:
            reasons.append(f"{check.name}: not measured in run {run.run_id}; rescan")
        elif check.decision == "undecided":
            seq = check.sequential
            assert seq is not None
            reasons.append(
                f"{check.name}: undecided after {seq.n} samples (anytime CI "
                f"{seq.ci_low:.3f}-{seq.ci_high:.3f} straddles {check.threshold:.3f}); "
                f"scan.undecided = {config.scan.undecided!r}"
            )
        elif not check.passed and (suite := config.behaviour_suite(check.name)) is not None:
            reasons.append(behaviour_reason(suite, check.measurement))
        elif not check.passed:
            m = check.measurement
            judged = f", {check.judged_on}" if check.attacks else ""
            reasons.append(
                f"{check.name} = {m.value:.3f} ({m.confidence:.0%} CI {m.ci_low:.3f}-"
                f"{m.ci_high:.3f}, n={m.n}{judged}) < required {check.threshold:.3f}"
            )
    blocking = sorted(
        (
            f
            for f in findings.values()
            if f.is_open and f.model == run.model and f.severity in config.policy.fail_on
        ),
        key=lambda f: ("critical", "high", "medium", "low").index(f.severity),
    )
    for f in blocking:
        reasons.append(f"open {f.severity} finding {f.finding_id}: {f.title}")
    extra = [_validation_check(config, run, validation, released)]
    extra += _regression_checks(config, run, measurements, released)
    loosened = policy_loosening(config, released)
    if loosened:
        extra.append(
            GateCheck(
                "policy",
                True,
                "looser than at the last release: " + "; ".join(loosened),
            )
        )
    reasons += [f"{c.name}: {c.reason}" for c in extra if not c.passed]
    passed = all(c.passed for c in checks) and not blocking and all(c.passed for c in extra)
    return GateDecision(
        passed=passed,
        checks=checks,
        blocking_findings=blocking,
        run=run,
        reasons=reasons,
        extra_checks=extra,
        validation=validation,
        released=released,
        loosened=loosened,
        ledger_head=ledger_head,
        ledger_checkpoint=ledger_checkpoint,
        privacy=privacy,
    )


def policy_loosening(config: HardenConfig, released: ModelReleased | None) -> list[str]:
    """How today's policy is looser than the one the last release was gated under, in
    words: a lowered threshold, a dropped requirement, fewer blocking severities, a wider
    regression margin, validation no longer required. Empty when nothing loosened or no
    policy was recorded with the release."""
    if released is None or not isinstance(released.policy, dict):
        return []
    before = released.policy
    now = config.policy
    out: list[str] = []
    old_clean = before.get("min_clean_accuracy")
    if old_clean is not None and (now.min_clean_accuracy or 0.0) < old_clean:
        out.append(f"min_clean_accuracy {old_clean:g} -> {now.min_clean_accuracy or 0:g}")
    current = {(r.threat, r.budget): r.min_accuracy for r in now.robust}
    for req in before.get("robust") or []:
        key = (req.get("threat"), req.get("budget"))
        old = float(req.get("min_accuracy", 0.0))
        if key not in current:
            out.append(f"robust requirement {key[0]}@{key[1]:g} (>= {old:g}) removed")
        elif current[key] < old:
            out.append(f"robust {key[0]}@{key[1]:g} min_accuracy {old:g} -> {current[key]:g}")
    dropped = sorted(set(before.get("fail_on") or []) - set(now.fail_on))
    if dropped:
        out.append(f"fail_on no longer blocks {dropped}")
    if now.max_regression > float(before.get("max_regression", now.max_regression)):
        out.append(f"max_regression {before['max_regression']:g} -> {now.max_regression:g}")
    if before.get("require_validation") and not now.require_validation:
        out.append("require_validation turned off")
    return out


def _validation_check(
    config: HardenConfig,
    run: RunRecord,
    validation: dict[str, Any] | None,
    released: ModelReleased | None,
) -> GateCheck:
    if validation is not None:
        base = str(validation["baseline_sha256"])[:12]
        if validation["passed"]:
            return GateCheck("validation", True, f"passed against baseline {base}")
        failed = [c["name"] for c in validation["checks"] if not c["passed"]]
        return GateCheck("validation", False, f"failed against baseline {base}: {failed}")
    changed = released is not None and released.model_sha256 != run.model_sha256
    if config.policy.require_validation and changed:
        return GateCheck(
            "validation",
            False,
            "the model differs from the released one and no validation is recorded; run "
            "`hardenml validate RELEASED CANDIDATE`",
        )
    return GateCheck("validation", True, "none recorded for this model; not required")


def _regression_checks(
    config: HardenConfig,
    run: RunRecord,
    measurements: list[Measurement],
    released: ModelReleased | None,
) -> list[GateCheck]:
    if released is None:
        return [GateCheck("regression", True, "no released model recorded yet")]
    sha = released.model_sha256[:12]
    if released.model_sha256 == run.model_sha256:
        return [GateCheck("regression", True, f"this is the released model {sha}")]
    before = {m.key: m for m in (Measurement.from_dict(d) for d in released.measurements)}
    margin = config.policy.max_regression
    note = "" if released.data_sha256 == run.completed.data_sha256 else " (other data)"
    out = []
    for m in measurements:
        old = before.get(m.key)
        if old is None:
            continue
        # A calibration error that falls is an improvement: its regression is a rise.
        lower_better = m.metric in LOWER_IS_BETTER
        ok = m.value <= old.value + margin if lower_better else m.value >= old.value - margin
        change = "rise" if lower_better else "drop"
        out.append(
            GateCheck(
                f"regression[{m.key}]",
                ok,
                f"{m.value:.3f} vs {old.value:.3f} for released {sha}{note}; "
                f"{'within' if ok else 'more than'} the allowed {change} {margin:g}",
            )
        )
    return out or [GateCheck("regression", True, f"no metric in common with released {sha}")]
