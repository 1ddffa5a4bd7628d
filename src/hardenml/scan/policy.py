"""The release policy applied to measurements: checks, and findings for the failures."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from hardenml.config import HardenConfig, Severity
from hardenml.scan.metrics import Measurement
from hardenml.scan.sequential import Decision, SequentialCheck, sequential_check


@dataclass(frozen=True)
class PolicyCheck:
    """One threshold of the policy against the measurement it governs.

    In `point` mode the check passes when the measured value reaches the threshold. In
    `sequential` mode (a scan allowed to stop early) it is decided by the anytime-valid
    interval: pass when it lies wholly at or above the threshold, fail when wholly below,
    undecided otherwise, which `undecided_passes` maps to a verdict.
    """

    name: str
    metric: str
    threat: str | None
    budget: float | None
    threshold: float
    measurement: Measurement | None
    mode: Literal["point", "sequential"] = "point"
    n_max: int = 0
    undecided_passes: bool = False

    @property
    def sequential(self) -> SequentialCheck | None:
        m = self.measurement
        if m is None:
            return None
        return sequential_check(
            round(m.value * m.n),
            m.n,
            self.threshold,
            confidence=m.confidence,
            n_max=max(self.n_max, m.n),
        )

    @property
    def decision(self) -> Decision:
        m = self.measurement
        if m is None:
            return "undecided"
        if self.mode == "sequential":
            seq = self.sequential
            assert seq is not None
            return seq.decision
        return "pass" if m.value >= self.threshold else "fail"

    @property
    def passed(self) -> bool:
        decision = self.decision
        if decision == "undecided":
            return self.undecided_passes and self.measurement is not None
        return decision == "pass"

    @property
    def shortfall(self) -> float:
        m = self.measurement
        return 0.0 if m is None else max(0.0, self.threshold - m.value)

    def as_dict(self) -> dict[str, Any]:
        m = self.measurement
        seq = self.sequential
        return {
            "name": self.name,
            "metric": self.metric,
            "threat": self.threat,
            "budget": self.budget,
            "threshold": self.threshold,
            "passed": self.passed,
            "decision": self.decision,
            "mode": self.mode,
            "value": None if m is None else m.value,
            "ci": None if m is None else [m.ci_low, m.ci_high],
            "anytime_ci": None if seq is None else [seq.ci_low, seq.ci_high],
            "settled": None if seq is None else seq.settled,
            "n": None if m is None else m.n,
        }


def fingerprint(
    model: str, threat: str | None, metric: str, budget: float | None, slice_: str | None = None
) -> str:
    """Stable identity of a vulnerability: the same one seen in two runs is one finding."""
    key = "|".join(
        [model, threat or "-", metric, "-" if budget is None else f"{budget:g}", slice_ or "-"]
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def finding_id_for(
    model: str, threat: str | None, metric: str, budget: float | None, slice_: str | None = None
) -> str:
    return f"HML-{fingerprint(model, threat, metric, budget, slice_)[:8]}"


@dataclass(frozen=True)
class Finding:
    fingerprint: str
    title: str
    model: str
    threat: str | None
    metric: str
    budget: float | None
    severity: Severity
    value: float
    threshold: float
    ci: tuple[float, float]
    n: int
    owner: str
    exploitation: str
    remediation: str
    evidence: list[dict[str, Any]] = field(default_factory=list)
    slice: str | None = None

    @property
    def finding_id(self) -> str:
        return f"HML-{self.fingerprint[:8]}"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ci"] = list(self.ci)
        data["finding_id"] = self.finding_id
        return data


def checks_for(
    config: HardenConfig,
    measurements: list[Measurement],
    *,
    sequential: bool = False,
    n_max: int = 0,
) -> list[PolicyCheck]:
    """The policy's checks against `measurements`; `sequential` when the scan may stop early."""
    by_key = {m.key: m for m in measurements}
    policy = config.policy
    mode: Literal["point", "sequential"] = "sequential" if sequential else "point"
    passes = config.scan.undecided == "pass"
    checks: list[PolicyCheck] = []
    if policy.min_clean_accuracy is not None:
        checks.append(
            PolicyCheck(
                "clean_accuracy",
                "clean_accuracy",
                None,
                None,
                policy.min_clean_accuracy,
                by_key.get("clean_accuracy"),
                mode,
                n_max,
                passes,
            )
        )
    for req in policy.robust:
        key = f"robust_accuracy[{req.threat}@{req.budget:g}]"
        checks.append(
            PolicyCheck(
                key,
                "robust_accuracy",
                req.threat,
                req.budget,
                req.min_accuracy,
                by_key.get(key),
                mode,
                n_max,
                passes,
            )
        )
    return checks


def finding_for(
    config: HardenConfig, check: PolicyCheck, evidence: list[dict[str, Any]] | None = None
) -> Finding:
    m = check.measurement
    assert m is not None and not check.passed
    model = config.model.name
    if check.threat is None:
        title = f"Clean accuracy {m.value:.1%} is below the policy's {check.threshold:.1%}"
        exploitation = "No attacker needed: the model misclassifies ordinary inputs too often."
        remediation = "Retrain or fine-tune on more representative data before hardening."
    else:
        title = (
            f"Robust accuracy under {check.threat} at budget {check.budget:g} is "
            f"{m.value:.1%}, below the policy's {check.threshold:.1%}"
        )
        exploitation = (
            f"An attacker with white-box gradient access who may change each input by at most "
            f"{check.budget:g} (L-infinity, in the raw input space) flips "
            f"{1 - m.value:.1%} of inputs, using {check.threat}."
        )
        remediation = (
            "Adversarial training: `hardenml patch --with pgd_at` (PGD-AT, Madry et al. 2018) "
            f"at budget {check.budget:g}; TRADES if clean accuracy must be kept."
        )
    owner = config.owner_for(check.threat or "clean_accuracy")
    return Finding(
        fingerprint=fingerprint(model, check.threat, check.metric, check.budget),
        title=title,
        model=model,
        threat=check.threat,
        metric=check.metric,
        budget=check.budget,
        severity=config.policy.severity.classify(check.shortfall),
        value=m.value,
        threshold=check.threshold,
        ci=(m.ci_low, m.ci_high),
        n=m.n,
        owner=owner,
        exploitation=exploitation,
        remediation=remediation,
        evidence=evidence or [],
    )


def slice_finding(
    config: HardenConfig, gap: dict[str, Any], threat: str | None, budget: float | None
) -> Finding:
    """A slice confidently worse than the rest by more than the policy's tolerance."""
    model = config.model.name
    where = "clean inputs" if threat is None else f"{threat} at budget {budget:g}"
    shortfall = gap["gap_ci"][0] - gap["tolerance"]
    return Finding(
        fingerprint=fingerprint(model, threat, "slice_gap", budget, gap["name"]),
        title=(
            f"Slice {gap['name']!r} is {gap['gap']:.1%} less accurate than the rest on "
            f"{where} (tolerance {gap['tolerance']:.1%})"
        ),
        model=model,
        threat=threat,
        metric="slice_gap",
        budget=budget,
        severity=config.policy.severity.classify(shortfall),
        value=gap["accuracy_slice"],
        threshold=gap["accuracy_rest"] - gap["tolerance"],
        ci=tuple(gap["accuracy_slice_ci"]),
        n=gap["n_slice"],
        owner=config.owner_for(threat, gap["name"].split("=")[0]),
        exploitation=(
            f"Inputs from slice {gap['name']!r} fail more often: an attacker (or "
            "ordinary traffic) concentrated there sees a worse model."
        ),
        remediation=(
            "Collect or re-weight data for this slice and retrain; add the slice to "
            "the replay buffer; check it for label noise."
        ),
        slice=gap["name"],
    )


def integrity_finding(config: HardenConfig, result: Any) -> Finding:
    """An evaluation that cannot be trusted: its robust accuracy may be overstated."""
    model = config.model.name
    metric = f"integrity:{result.check}"
    return Finding(
        fingerprint=fingerprint(model, result.threat, metric, result.budget),
        title=f"Evaluation unreliable ({result.check.replace('_', ' ')}): {result.detail}",
        model=model,
        threat=result.threat,
        metric=metric,
        budget=result.budget,
        severity=config.integrity.severity,
        value=result.value,
        threshold=result.limit,
        ci=(result.value, result.value),
        n=result.n,
        owner=config.owner_for(result.threat),
        exploitation=(
            "The robustness numbers for this threat may be overstated: an adaptive attacker "
            "who works around the model's gradients (Athalye et al. 2018) can do better "
            "than the scan's attack did."
        ),
        remediation=(
            "Do not trust this threat's robust accuracy until fixed: evaluate with the APGD "
            'ensemble (attack = "autoattack") and black-box attacks; if the model has '
            "non-differentiable preprocessing, attack through it with BPDA/EOT; raise steps "
            "and restarts until robust accuracy stops falling."
        ),
    )
