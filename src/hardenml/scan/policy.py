"""The release policy applied to measurements: checks, and findings for the failures."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from hardenml.config import HardenConfig, Severity
from hardenml.scan.metrics import Measurement


@dataclass(frozen=True)
class PolicyCheck:
    """One threshold of the policy against the measurement it governs."""

    name: str
    metric: str
    threat: str | None
    budget: float | None
    threshold: float
    measurement: Measurement | None

    @property
    def passed(self) -> bool:
        return self.measurement is not None and self.measurement.value >= self.threshold

    @property
    def shortfall(self) -> float:
        return (
            0.0 if self.measurement is None else max(0.0, self.threshold - self.measurement.value)
        )

    def as_dict(self) -> dict[str, Any]:
        m = self.measurement
        return {
            "name": self.name,
            "metric": self.metric,
            "threat": self.threat,
            "budget": self.budget,
            "threshold": self.threshold,
            "passed": self.passed,
            "value": None if m is None else m.value,
            "ci": None if m is None else [m.ci_low, m.ci_high],
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

    @property
    def finding_id(self) -> str:
        return f"HML-{self.fingerprint[:8]}"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ci"] = list(self.ci)
        data["finding_id"] = self.finding_id
        return data


def checks_for(config: HardenConfig, measurements: list[Measurement]) -> list[PolicyCheck]:
    by_key = {m.key: m for m in measurements}
    policy = config.policy
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
            )
        )
    for req in policy.robust:
        probe = Measurement("robust_accuracy", req.threat, req.budget, 0, 0, 0, 0, 0, 0)
        checks.append(
            PolicyCheck(
                f"robust_accuracy[{req.threat}@{req.budget:g}]",
                "robust_accuracy",
                req.threat,
                req.budget,
                req.min_accuracy,
                by_key.get(probe.key),
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
