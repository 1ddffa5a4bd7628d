"""The release policy applied to measurements: checks, and findings for the failures."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from hardenml.config import FEATURE_NOISE, BehaviourSuite, HardenConfig
from hardenml.records import Finding, Measurement, fingerprint, metric_key
from hardenml.scan.sequential import Decision, SequentialCheck, sequential_check
from hardenml.scan.threat_models import SharedThreatModel, governing
from hardenml.threats import Threat, ThreatLookupError, threat_class
from hardenml.threats.taxonomy import finding_taxonomy


@dataclass(frozen=True)
class PolicyCheck:
    """One threshold of the policy against the measurement it governs.

    In `point` mode the check passes when the measured value reaches the threshold. In
    `sequential` mode (a scan allowed to stop early) it is decided by the anytime-valid
    interval: pass when it lies wholly at or above the threshold, fail when wholly below,
    undecided otherwise, which `undecided_passes` maps to a verdict.

    A robustness requirement whose threat shares its threat model with other threats of
    the scan is judged on the per-sample worst case over all of them: `threat_model`
    names it (`linf@0.1`), `attacks` the threats, and `measurement` is its
    `robust_accuracy_worst` measurement (`hardenml.scan.threat_models`).
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
    threat_model: str | None = None
    attacks: tuple[str, ...] = ()

    @property
    def judged_on(self) -> str:
        """Words for what the value is, where it is more than the named threat's own
        result: `worst case over pgd, square at linf@0.1`; empty otherwise."""
        if not self.attacks:
            return ""
        return f"worst case over {', '.join(self.attacks)} at {self.threat_model}"

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
            "threat_model": self.threat_model,
            "attacks": list(self.attacks),
        }


def checks_for(
    config: HardenConfig,
    measurements: list[Measurement],
    *,
    sequential: bool = False,
    n_max: int = 0,
    threat_models: Sequence[SharedThreatModel] = (),
) -> list[PolicyCheck]:
    """The policy's checks against `measurements`; `sequential` when the scan may stop early.

    `threat_models`: those the scan attacked with more than one threat. A robustness
    requirement in one of them is judged on its worst-case measurement, so no attack's
    success is averaged away; a run recorded without that measurement (before it existed)
    is judged on the requirement's own threat."""
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
        key = metric_key("robust_accuracy", req.threat, req.budget)
        shared = governing(threat_models, req.threat, req.budget)
        worst = by_key.get(shared.measurement_key) if shared is not None else None
        judged_on = shared if worst is not None else None
        checks.append(
            PolicyCheck(
                key,
                "robust_accuracy",
                req.threat,
                req.budget,
                req.min_accuracy,
                worst if worst is not None else by_key.get(key),
                mode,
                n_max,
                passes,
                threat_model=None if judged_on is None else str(judged_on.model),
                attacks=() if judged_on is None else judged_on.threats,
            )
        )
    # Behavioural suites run once over the evaluated samples, after the threats: a point
    # check even in a sequential scan, which never waits for them to settle.
    for suite in config.behaviour:
        checks.append(
            PolicyCheck(
                suite.check_name,
                suite.check_name,
                None,
                None,
                suite.threshold,
                by_key.get(suite.check_name),
                "point",
                n_max,
                passes,
            )
        )
    return checks


def behaviour_reason(suite: BehaviourSuite, m: Measurement) -> str:
    """A failed behavioural check in its own units: failure rate (or accuracy) vs limit."""
    lo, hi = m.ci_low, m.ci_high
    level = f"{m.confidence:.0%} CI"
    if suite.kind == "minimum":
        return (
            f"{suite.check_name}: accuracy {m.value:.3f} ({level} {lo:.3f}-{hi:.3f}, n={m.n}) "
            f"< required {suite.threshold:.3f}"
        )
    return (
        f"{suite.check_name}: failure rate {1 - m.value:.3f} ({level} {1 - hi:.3f}-{1 - lo:.3f}, "
        f"n={m.n}) > allowed {suite.max_failure_rate:.3f}"
    )


# What a finding proposes for a threat: given by the caller, which knows the registered
# patches and the model's kind (the scan room does not look upward into `patch`).
Remedy = Callable[[Threat, float], str]


def generic_remedy(threat: Threat, budget: float) -> str:
    """A remediation that names no patch, for callers that know none."""
    if threat.family == "corruption":
        return (
            f"Train with {threat.title or 'this corruption'} as data augmentation, or remove "
            "the degradation before the model sees it."
        )
    return (
        f"Adversarial training or augmentation at budget {budget:g} against this threat; "
        "re-run the scan to confirm."
    )


def _flips(m: Measurement, clean: Measurement | None) -> str:
    """How many of the correctly classified inputs the threat flipped, in counts: one minus
    robust accuracy would also count the inputs that were wrong before any attack."""
    if clean is None or clean.n != m.n or m.n == 0:
        return f"leaves robust accuracy at {m.value:.1%} (n={m.n})"
    correct = round(clean.value * clean.n)
    flipped = max(0, correct - round(m.value * m.n))
    if correct == 0:
        return "finds no correctly classified input to flip"
    return (
        f"flips {flipped} of the {correct} inputs the model classified correctly "
        f"({flipped / correct:.1%})"
    )


def threat_taxonomy(config: HardenConfig, threats: Sequence[str | None]) -> dict[str, Any]:
    """The taxonomy ids of findings about the named threats, by what their attacks declare
    (family, access); the union, in order, when a finding is about several."""
    merged: dict[str, Any] = {}
    for name in threats:
        attack = next((t.attack for t in config.threats if t.name == name), None)
        try:
            cls = None if attack is None else threat_class(attack)
        except ThreatLookupError:
            cls = None
        for key, value in finding_taxonomy(cls).items():
            if isinstance(value, list):
                merged[key] = list(dict.fromkeys([*merged.get(key, []), *value]))
            else:
                merged[key] = value
    return merged


def finding_for(
    config: HardenConfig,
    check: PolicyCheck,
    evidence: list[dict[str, Any]] | None = None,
    *,
    threat: Threat | None = None,
    clean: Measurement | None = None,
    remedy: Remedy | None = None,
) -> Finding:
    """The finding for a failed check. `threat` (the threat object of a robustness check)
    describes the attacker and `remedy` proposes the fix; `clean` (the clean-accuracy
    measurement on the same samples) turns robust accuracy into a flip count."""
    m = check.measurement
    assert m is not None and not check.passed
    model = config.model.name
    suite = config.behaviour_suite(check.name)
    if suite is not None:
        return behaviour_finding(config, suite, check, evidence)
    if check.threat is None:
        title = f"Clean accuracy {m.value:.1%} is below the policy's {check.threshold:.1%}"
        exploitation = "No attacker needed: the model misclassifies ordinary inputs too often."
        remediation = "Retrain or fine-tune on more representative data before hardening."
    else:
        assert check.budget is not None
        corruption = threat is not None and threat.family == "corruption"
        what = "Accuracy" if corruption else "Robust accuracy"
        at = f"severity {check.budget:g}" if corruption else f"budget {check.budget:g}"
        judged = f" ({check.judged_on})" if check.attacks else ""
        title = (
            f"{what} under {check.threat} at {at} is {m.value:.1%}{judged}, below the "
            f"policy's {check.threshold:.1%}"
        )
        who = (
            threat.describe(check.budget)
            if threat is not None
            else f"the threat {check.threat} at budget {check.budget:g}"
        )
        exploitation = f"{who[0].upper()}{who[1:]}: it {_flips(m, clean)}."
        if check.attacks:
            exploitation = (
                f"{who[0].upper()}{who[1:]}, or any other attack the scan ran in the same "
                f"threat model ({', '.join(check.attacks)} at {check.threat_model}): a sample "
                f"counts as robust only if every one of them failed, and together they "
                f"{_flips(m, clean)}."
            )
        remediation = (
            (remedy or generic_remedy)(threat, check.budget)
            if threat is not None
            else generic_remedy_text(check.budget)
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
        taxonomy=(
            finding_taxonomy(type(threat))
            if threat is not None
            else threat_taxonomy(config, [check.threat])
        ),
    )


def generic_remedy_text(budget: float) -> str:
    return f"Harden the model against this threat at budget {budget:g} and re-run the scan."


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
        taxonomy=threat_taxonomy(config, [threat]),
    )


def integrity_finding(config: HardenConfig, results: Sequence[Any]) -> Finding:
    """One signal of an unreliable evaluation, for the whole model: the flagged results of
    one integrity check (`hardenml.scan.integrity.IntegrityResult`), one per threat it
    fired for, or one for a check of the model itself."""
    model = config.model.name
    check = results[0].check
    metric = f"integrity:{check}"
    threats = [r.threat for r in results if r.threat is not None]
    worst = max(results, key=lambda r: abs(r.value))
    where = f" for {', '.join(threats)}" if threats else ""
    return Finding(
        fingerprint=fingerprint(model, None, metric, None),
        title=(
            f"Evaluation unreliable ({check.replace('_', ' ')}){where}: "
            + "; ".join(r.detail for r in results)
        ),
        model=model,
        threat=None,
        metric=metric,
        budget=None,
        severity=config.integrity.severity,
        value=worst.value,
        threshold=worst.limit,
        ci=worst.ci,
        n=worst.n,
        owner=config.owner_for(threats[0] if threats else None),
        exploitation=(
            "The robustness numbers of this scan may be overstated: an adaptive attacker "
            "who works around the model's gradients or randomness (Athalye et al. 2018; "
            "Tramer et al. 2020) can do better than the scan's attacks did."
        ),
        remediation=" ".join(
            dict.fromkeys(f"{r.advice[0].upper()}{r.advice[1:]}." for r in results)
        ),
        taxonomy=threat_taxonomy(config, threats),
    )


def _tested(suite: BehaviourSuite) -> str:
    """What a suite does to the inputs, in words."""
    if suite.kind == "invariance" and suite.transform == FEATURE_NOISE:
        return f"uniform noise of at most {suite.noise:g} on features {suite.features}"
    if suite.kind == "invariance" and suite.transform in ("name-swap", "location-swap"):
        return f"{suite.transform.replace('-', ' ')}s"
    if suite.kind == "invariance":
        return f"{suite.transform} at severity {suite.severity}"
    if suite.kind == "directional" and suite.edit is not None:
        return f"{suite.edit} of statements of class {suite.class_!r}"
    if suite.kind == "directional":
        return f"adding {suite.change:+g} to feature {suite.feature!r}"
    if suite.templates is not None:
        return f"sentences from {len(suite.templates)} templates, all of class {suite.class_!r}"
    return "no change" if suite.class_ is None else f"class {suite.class_!r}"


def behaviour_finding(
    config: HardenConfig,
    suite: BehaviourSuite,
    check: PolicyCheck,
    evidence: list[dict[str, Any]] | None = None,
) -> Finding:
    """A behavioural suite that failed: its severity comes from how far the pass rate (or
    accuracy) falls below the suite's threshold, like every other check."""
    m = check.measurement
    assert m is not None
    model = config.model.name
    rate, allowed = 1 - m.value, suite.max_failure_rate
    what = _tested(suite)
    if suite.kind == "invariance":
        title = (
            f"Behavioural suite {suite.name!r}: {rate:.1%} of predictions change under "
            f"{what} (allowed {allowed:.1%})"
        )
        exploitation = (
            "No attacker needed: ordinary variation of this kind changes the model's decision, "
            "so anyone presenting such inputs (or the world, by chance) flips it."
        )
        remediation = (
            f"Train with the transform as augmentation ({what}) or fine-tune on transformed "
            "copies; `hardenml patch` with a sanitizer if the variation can be removed first."
        )
    elif suite.kind == "directional":
        title = (
            f"Behavioural suite {suite.name!r}: {what} moves P({suite.class_}) against the "
            f"expected '{suite.expect}' for {rate:.1%} of inputs (allowed {allowed:.1%})"
        )
        exploitation = (
            f"The model's response to {suite.edit or f'feature {suite.feature!r}'} contradicts "
            "the domain's "
            "known relation: a user who controls the feature can move the decision the wrong "
            "way, and the model's reasoning on it cannot be trusted."
        )
        remediation = (
            (
                "Retrain with counterfactual pairs (each statement and its negation, labelled "
                "apart) and features that see word order (bigrams such as 'not good')."
            )
            if suite.edit is not None
            else "Check the feature's encoding and sign; constrain the model to be monotonic in "
            "it (e.g. monotonic_cst in scikit-learn's gradient boosting) or retrain with "
            "counterfactual pairs."
        )
    else:
        where = "all inputs" if suite.class_ is None else f"class {suite.class_!r}"
        title = (
            f"Behavioural suite {suite.name!r}: accuracy on {where} is {m.value:.1%}, below "
            f"the suite's {suite.threshold:.1%}"
        )
        exploitation = f"No attacker needed: the model fails the minimum functionality on {where}."
        remediation = "Collect or re-weight data for these inputs, check their labels, retrain."
    return Finding(
        fingerprint=fingerprint(model, None, suite.check_name, None),
        title=title,
        model=model,
        threat=None,
        metric=suite.check_name,
        budget=None,
        severity=config.policy.severity.classify(check.shortfall),
        value=m.value,
        threshold=check.threshold,
        ci=(m.ci_low, m.ci_high),
        n=m.n,
        owner=config.owner_for(f"behaviour:{suite.name}"),
        exploitation=exploitation,
        remediation=remediation,
        evidence=evidence or [],
    )
