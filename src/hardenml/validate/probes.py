"""A chat model's validation: the same prompt probes, with the same seeds, against the
baseline and the candidate (a guarded model, say), compared conversation by conversation.

Each `[[policy.robust]]` requirement on a probe is judged as a tensor threat's is
(`verdict.robust_check`): below the policy the candidate must hold in significantly more
conversations, above it it must stay within the margin. Every probe's detector error
rates are recorded with the verdict, since both pass rates are read through them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hardenml.config import HardenConfig
from hardenml.records import UnitKey
from hardenml.stats import mean_difference_interval, resampling_counts
from hardenml.threats import ThreatError
from hardenml.threats.probes import ProbeOutcome
from hardenml.validate.evaluate import robust_key
from hardenml.validate.verdict import (
    BOOTSTRAP_SAMPLES,
    ValidationCheck,
    Verdict,
    robust_check,
)


def held(outcome: ProbeOutcome) -> np.ndarray:
    """Per conversation, in the prompt files' order: True where the model held."""
    return np.array([v.passed for v in outcome.verdicts], dtype=bool)


def compare_probes(
    config: HardenConfig,
    baseline: dict[UnitKey, ProbeOutcome],
    candidate: dict[UnitKey, ProbeOutcome],
    *,
    seed: int,
    benign: tuple[ProbeOutcome, ProbeOutcome] | None = None,
    samples: int = BOOTSTRAP_SAMPLES,
) -> Verdict:
    """Judge `candidate` against `baseline`, probed with the same prompts and seed.

    `benign`: both models' answers to ordinary requests (`BenignRequests`): the share they
    answer without refusing must not fall beyond `policy.clean_margin`, as clean accuracy
    must not for a classifier, so a guard cannot pass by refusing everything."""
    checks = []
    n = 0
    if benign is not None:
        checks.append(_over_refusal(config, *benign, seed=seed, samples=samples))
    for req in config.policy.robust:
        unit = UnitKey(req.threat, req.budget)
        if unit not in baseline or unit not in candidate:
            raise ThreatError(
                f"policy.robust names {unit}, which no declared probe ran at that budget"
            )
        base, cand = held(baseline[unit]), held(candidate[unit])
        if [v.item for v in baseline[unit].verdicts] != [v.item for v in candidate[unit].verdicts]:
            raise ThreatError(f"{unit}: baseline and candidate were asked different prompts")
        n = max(n, len(base))
        counts = resampling_counts(len(base), samples=samples, seed=seed)
        rates = baseline[unit].error_rates
        note = (
            f" (judged by {rates.detector}: false positives {rates.false_positive.words()}, "
            f"false negatives {rates.false_negative.words()})"
        )
        checks.append(
            robust_check(
                config,
                robust_key(req.threat, req.budget),
                base,
                cand,
                req.min_accuracy,
                counts,
                note=note,
            )
        )
    verdict = Verdict(
        passed=all(c.passed for c in checks),
        checks=checks,
        n=n,
        seed=seed,
        confidence=config.policy.confidence,
    )
    verdict.extra = {"probes": _summaries(baseline, candidate)}
    return verdict


def _over_refusal(
    config: HardenConfig,
    baseline: ProbeOutcome,
    candidate: ProbeOutcome,
    *,
    seed: int,
    samples: int,
) -> ValidationCheck:
    conf, margin = config.policy.confidence, config.policy.clean_margin
    base, cand = held(baseline), held(candidate)
    counts = resampling_counts(len(base), samples=samples, seed=seed)
    diff, lo, hi = mean_difference_interval(base, cand, counts, conf)
    ok = lo >= -margin
    return ValidationCheck(
        "benign requests answered non-inferiority",
        ok,
        f"{base.mean():.3f} -> {cand.mean():.3f} of {len(base)} ordinary requests answered "
        f"without a refusal ({diff:+.1%}, {conf:.0%} CI [{lo:+.1%}, {hi:+.1%}]); lower end "
        f"{'within' if ok else 'beyond'} the margin -{margin:g}; judged by the "
        f"{baseline.error_rates.words()}",
        float(base.mean()),
        float(cand.mean()),
        diff,
        (lo, hi),
    )


def _summaries(
    baseline: dict[UnitKey, ProbeOutcome], candidate: dict[UnitKey, ProbeOutcome]
) -> list[dict[str, Any]]:
    return [
        {
            "unit": str(unit),
            "baseline": baseline[unit].summary(),
            "candidate": candidate[unit].summary(),
        }
        for unit in baseline
        if unit in candidate
    ]
