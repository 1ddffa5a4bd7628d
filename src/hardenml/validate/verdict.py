"""The validator's verdict: is the candidate at least as good as the baseline, where it
should be better is it, and by how much, with what certainty.

Five kinds of check, each with a reason:
- clean accuracy is non-inferior: the lower end of the paired bootstrap interval of
  (candidate - baseline) is above `-policy.clean_margin`; the exact McNemar test is
  reported beside it.
- robust accuracy, per `policy.robust` requirement (the per-sample worst case over the
  threats sharing its threat model, as the gate judges it): where the baseline falls short of
  the requirement the candidate must improve on it (interval above 0 and McNemar
  significant at `1 - confidence`); where the baseline already met it, non-inferior
  within `clean_margin`.
- calibration is not worse: the upper end of the interval of ECE(candidate) -
  ECE(baseline) is at most `policy.ece_margin`.
- no finding is reopened: every policy check the baseline passed, or whose finding the
  ledger records as fixed, still passes for the candidate.
- held-out threats (`[[threats]] held_out = true`), reported apart: for each at every
  budget, on its own outcomes, the robust check above (improvement where a requirement
  names it and the baseline falls short, else non-inferiority). No patch trained on them,
  so this is where a defence that learned one attack rather than the threat model shows.
- behavioural suites pass: every `[[behaviour]]` suite passes on the candidate (failure
  rate at most its `max_failure_rate`, or accuracy at least its `min_accuracy`); the
  reason gives each suite's baseline -> candidate numbers. No suites: it passes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hardenml.config import HardenConfig
from hardenml.scan.behaviour import SuiteResult
from hardenml.stats import (
    ece_difference_interval,
    mcnemar_exact,
    mean_difference_interval,
    resampling_counts,
)
from hardenml.validate.evaluate import Outcomes, robust_key

BOOTSTRAP_SAMPLES = 2000


@dataclass(frozen=True)
class ValidationCheck:
    name: str
    passed: bool
    reason: str
    baseline: float
    candidate: float
    difference: float
    ci: tuple[float, float]
    p_value: float | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ci"] = list(self.ci)
        return data


@dataclass
class Verdict:
    passed: bool
    checks: list[ValidationCheck]
    n: int
    seed: int
    confidence: float
    baseline_sha256: str = ""
    candidate_sha256: str = ""
    data_sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # Checks on the held-out threats (`[[threats]] held_out = true`), kept apart from
    # `checks`; a failed one fails the verdict too.
    held_out: list[ValidationCheck] = field(default_factory=list)
    held_out_threats: list[str] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        """Why it failed: the reason of every failed check."""
        return [f"{c.name}: {c.reason}" for c in self.checks + self.held_out if not c.passed]

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "n": self.n,
            "seed": self.seed,
            "confidence": self.confidence,
            "baseline_sha256": self.baseline_sha256,
            "candidate_sha256": self.candidate_sha256,
            "data_sha256": self.data_sha256,
            "checks": [c.as_dict() for c in self.checks],
            "held_out": {
                "threats": self.held_out_threats,
                "passed": all(c.passed for c in self.held_out),
                "checks": [c.as_dict() for c in self.held_out],
            },
            **self.extra,
        }


def _pct(v: float) -> str:
    return f"{100 * v:+.1f} pts"


def _bound(v: float, margin: float) -> str:
    """A bound beside the margin it is judged against, with the digits that decide it:
    +0.0201 must not read as "+0.020 beyond the margin +0.02"."""
    return f"{100 * v:+.2f} pts" if abs(v + margin) < 0.001 or abs(v - margin) < 0.001 else _pct(v)


def _interval(lo: float, hi: float, level: str) -> str:
    """The bootstrap interval, or why it has no width: every pair agrees."""
    if hi - lo <= 0:
        return f"{level}: none, every paired sample agrees, so the bootstrap has no spread"
    return f"{level} [{_pct(lo)}, {_pct(hi)}]"


def samples_needed(diff: float, lo: float, n: int, margin: float) -> int | None:
    """Paired samples the same design would need for the interval's lower end to clear
    `-margin` at the observed difference: the half-width shrinks as 1/sqrt(n). None when
    the observed difference itself is below the margin (no sample size shows it)."""
    half = diff - lo
    room = diff + margin
    if room <= 0 or half <= 0:
        return None
    return int(np.ceil(n * (half / room) ** 2))


def _power_note(diff: float, lo: float, n: int, margin: float) -> str:
    """Why a non-inferiority check failed when the candidate may well be fine: the sample
    is too small for the margin."""
    need = samples_needed(diff, lo, n, margin)
    if need is None:
        return f"; the observed change itself is below -{margin:g}"
    return (
        f"; at this spread about {need} paired samples (n = {n} now) would show it, or "
        f"widen policy.clean_margin to {max(0.0, -lo):.3f}"
    )


def compare(
    config: HardenConfig,
    baseline: Outcomes,
    candidate: Outcomes,
    y: np.ndarray,
    *,
    seed: int,
    fixed_checks: set[str] | None = None,
    samples: int = BOOTSTRAP_SAMPLES,
) -> Verdict:
    """Judge `candidate` against `baseline`, measured on the same samples with labels `y`."""
    policy = config.policy
    conf = policy.confidence
    n = len(y)
    counts = resampling_counts(n, samples=samples, seed=seed)
    level = f"{conf:.0%} CI"
    checks: list[ValidationCheck] = []

    diff, lo, hi = mean_difference_interval(baseline.clean, candidate.clean, counts, conf)
    test = mcnemar_exact(baseline.clean, candidate.clean)
    margin = policy.clean_margin
    ok = lo >= -margin
    checks.append(
        ValidationCheck(
            "clean_accuracy non-inferiority",
            ok,
            f"{baseline.clean.mean():.3f} -> {candidate.clean.mean():.3f} ({_pct(diff)}, "
            f"{_interval(lo, hi, level)}); lower end {_bound(lo, margin)} "
            f"{'within' if ok else 'beyond'} the margin -{margin:g}"
            f"{'' if ok else _power_note(diff, lo, n, margin)}; exact McNemar "
            f"p = {test.p_value:.3g} (baseline-only right {test.b}, candidate-only {test.c})",
            float(baseline.clean.mean()),
            float(candidate.clean.mean()),
            diff,
            (lo, hi),
            test.p_value,
        )
    )

    held_out = set(config.held_out_threats)
    for req in policy.robust:
        if req.threat in held_out:
            continue
        key = robust_key(req.threat, req.budget)
        checks.append(
            robust_check(
                config,
                key,
                baseline.judged(key),
                candidate.judged(key),
                req.min_accuracy,
                counts,
                worst=key in candidate.worst,
            )
        )

    ece_b, ece_c, diff, lo, hi = ece_difference_interval(
        baseline.probs, candidate.probs, y, counts, conf
    )
    ok = hi <= policy.ece_margin
    checks.append(
        ValidationCheck(
            "calibration (ECE) not worse",
            ok,
            f"ECE {ece_b:.3f} -> {ece_c:.3f} ({diff:+.3f}, {level} [{lo:+.3f}, {hi:+.3f}]); "
            f"upper end {hi:+.4f} {'within' if ok else 'beyond'} the margin "
            f"+{policy.ece_margin:g}",
            ece_b,
            ece_c,
            diff,
            (lo, hi),
        )
    )

    checks.append(_reopened(config, baseline, candidate, fixed_checks or set()))
    checks.append(_behaviour(config, baseline, candidate))
    held_checks = _held_out_checks(config, baseline, candidate, counts)
    return Verdict(
        passed=all(c.passed for c in checks + held_checks),
        checks=checks,
        n=n,
        seed=seed,
        confidence=conf,
        held_out=held_checks,
        held_out_threats=config.held_out_threats,
    )


def robust_check(
    config: HardenConfig,
    key: str,
    base: np.ndarray,
    cand: np.ndarray,
    min_accuracy: float | None,
    counts: np.ndarray,
    *,
    worst: bool = False,
    note: str = "",
) -> ValidationCheck:
    """Robust accuracy on `key` (per-sample outcomes `base`, `cand`): where the baseline
    falls short of `min_accuracy` the candidate must improve significantly; otherwise (or
    with no requirement) it must be non-inferior within `policy.clean_margin`."""
    policy = config.policy
    conf = policy.confidence
    level = f"{conf:.0%} CI"
    diff, lo, hi = mean_difference_interval(base, cand, counts, conf)
    test = mcnemar_exact(base, cand)
    shown = (
        f"{base.mean():.3f} -> {cand.mean():.3f}{note}"
        f"{' (worst case over its threat model)' if worst else ''} ({_pct(diff)}, "
        f"{_interval(lo, hi, level)}); exact McNemar p = {test.p_value:.3g}"
    )
    if min_accuracy is not None and base.mean() < min_accuracy:
        ok = lo > 0 and test.c > test.b and test.p_value < 1 - conf
        why = (
            "a significant gain, as needed below the policy's "
            if ok
            else "no significant gain, but the baseline is below the policy's "
        )
        name, reason = f"robust_accuracy[{key}] improvement", f"{shown}: {why}"
        reason += f"{min_accuracy:.3f}"
    else:
        ok = lo >= -policy.clean_margin
        name = f"robust_accuracy[{key}] non-inferiority"
        met = (
            "no policy requirement"
            if min_accuracy is None
            else f"the baseline already met {min_accuracy:.3f}"
        )
        reason = (
            f"{shown}; lower end {_bound(lo, policy.clean_margin)} "
            f"{'within' if ok else 'beyond'} the margin -{policy.clean_margin:g}"
            f"{'' if ok else _power_note(diff, lo, len(base), policy.clean_margin)} ({met})"
        )
    return ValidationCheck(
        name, ok, reason, float(base.mean()), float(cand.mean()), diff, (lo, hi), test.p_value
    )


def _held_out_checks(
    config: HardenConfig, baseline: Outcomes, candidate: Outcomes, counts: np.ndarray
) -> list[ValidationCheck]:
    """One robust check per held-out threat and budget, on that threat's own outcomes:
    whether what the candidate learned carries over to an attack it never trained on."""
    required = {(r.threat, r.budget): r.min_accuracy for r in config.policy.robust}
    checks = []
    for threat in config.threats:
        if not threat.held_out:
            continue
        for budget in threat.budgets:
            key = robust_key(threat.name, budget)
            checks.append(
                robust_check(
                    config,
                    key,
                    baseline.robust[key],
                    candidate.robust[key],
                    required.get((threat.name, budget)),
                    counts,
                )
            )
    return checks


def _policy_values(config: HardenConfig, outcomes: Outcomes) -> dict[str, tuple[float, float]]:
    """Policy check name -> (value, threshold), named as the scan names its checks."""
    policy = config.policy
    values: dict[str, tuple[float, float]] = {}
    if policy.min_clean_accuracy is not None:
        values["clean_accuracy"] = (float(outcomes.clean.mean()), policy.min_clean_accuracy)
    for req in policy.robust:
        key = robust_key(req.threat, req.budget)
        values[f"robust_accuracy[{key}]"] = (float(outcomes.judged(key).mean()), req.min_accuracy)
    return values


def _reopened(
    config: HardenConfig, baseline: Outcomes, candidate: Outcomes, fixed: set[str]
) -> ValidationCheck:
    base = _policy_values(config, baseline)
    cand = _policy_values(config, candidate)
    reopened = sorted(
        name
        for name, (value, threshold) in cand.items()
        if value < threshold and (name in fixed or base[name][0] >= base[name][1])
    )
    if reopened:
        shown = ", ".join(f"{k} = {cand[k][0]:.3f} < {cand[k][1]:.3f}" for k in reopened)
        reason = f"the candidate fails checks the baseline passed or that were fixed: {shown}"
    else:
        reason = "every check the baseline passed, and every fixed finding's, still passes"
    failing_base = sum(value < threshold for value, threshold in base.values())
    failing_cand = sum(value < threshold for value, threshold in cand.values())
    # baseline/candidate: how many policy checks each fails; difference: how many reopened.
    return ValidationCheck(
        "no finding reopened",
        not reopened,
        reason,
        float(failing_base),
        float(failing_cand),
        float(len(reopened)),
        (0.0, 0.0),
    )


def _suite_number(result: SuiteResult | None) -> str:
    if result is None:
        return "-"
    value = result.pass_rate if result.kind == "minimum" else result.failure_rate
    return f"{value:.3f}"


def _behaviour(config: HardenConfig, baseline: Outcomes, candidate: Outcomes) -> ValidationCheck:
    """Every behavioural suite must pass on the candidate. baseline/candidate: how many
    suites each fails; difference: candidate - baseline."""
    name = "behavioural suites pass"
    if not config.behaviour:
        return ValidationCheck(
            name, True, "no behavioural suites declared", 0.0, 0.0, 0.0, (0.0, 0.0)
        )
    base = {r.name: r for r in baseline.behaviour}
    cand = {r.name: r for r in candidate.behaviour}
    parts, failing = [], []
    for suite in config.behaviour:
        b, c = base.get(suite.name), cand.get(suite.name)
        ok = c is not None and c.passed
        if not ok:
            failing.append(suite.name)
        if suite.kind == "minimum":
            what, limit = "accuracy", f"min {suite.threshold:.3f}"
        else:
            what, limit = "failure rate", f"max {suite.max_failure_rate:.3f}"
        parts.append(
            f"{suite.name} ({suite.kind}): {what} {_suite_number(b)} -> {_suite_number(c)} "
            f"({limit}) {'passes' if ok else 'FAILS'}"
        )
    head = (
        f"{len(failing)} of {len(config.behaviour)} suites fail on the candidate "
        f"({', '.join(failing)})"
        if failing
        else f"all {len(config.behaviour)} suites pass on the candidate"
    )
    failing_base = sum(not r.passed for r in baseline.behaviour)
    return ValidationCheck(
        name,
        not failing,
        f"{head}: " + "; ".join(parts),
        float(failing_base),
        float(len(failing)),
        float(len(failing) - failing_base),
        (0.0, 0.0),
    )
