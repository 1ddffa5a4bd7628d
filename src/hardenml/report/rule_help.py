"""What each kind of problem means and how to fix it, for the reports that show help beside
a result: SARIF rules (`help.text`, `help.markdown`, `helpUri`, `properties.precision`).

The long form of every entry is a section of docs/findings.md; `anchor` is its heading's
GitHub anchor, and a test checks that every anchor used here exists there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hardenml.config import HardenConfig
from hardenml.report.common import is_corruption, threat_attacks
from hardenml.threats import ThreatLookupError, make_threat

# Where the documentation of this repository is published: pyproject's `Documentation` URL
# (tests/test_sarif_github.py holds the two together).
DOCS_URL = "https://github.com/hardenml/hardenml/blob/main/docs"
FINDINGS_DOC = "findings.md"

# GitHub's `precision`: how often a result of the rule is a true problem.
Precision = Literal["very-high", "high", "medium", "low"]


@dataclass(frozen=True)
class RuleHelp:
    """What a rule's results mean, how to fix them, and how often they are true.

    `precision`, by kind: a robustness or behaviour failure is shown by stored inputs that
    the model gets wrong (very high); an accuracy, slice or regression result is a
    threshold on a sampled estimate with its interval (high); the integrity checks are
    heuristics for gradient masking that a sound model can trip (medium).
    """

    anchor: str
    title: str
    meaning: str
    fix: str
    precision: Precision

    @property
    def uri(self) -> str:
        return f"{DOCS_URL}/{FINDINGS_DOC}#{self.anchor}"

    def text(self, specific_fix: str | None = None) -> str:
        fix = f"{specific_fix} {self.fix}" if specific_fix else self.fix
        return f"{self.meaning}\n\nHow to fix: {fix}\n\nMore: {self.uri}"

    def markdown(self, specific_fix: str | None = None) -> str:
        lines = [f"## {self.title}", "", self.meaning, "", "### How to fix", ""]
        if specific_fix:
            lines += [f"For this finding: {specific_fix}", ""]
        lines += [self.fix, "", f"See [{self.title}]({self.uri}) in the hardenml docs."]
        return "\n".join(lines)


CLEAN = RuleHelp(
    "clean-accuracy",
    "Clean accuracy below the policy",
    "The model classifies too few ordinary, unattacked evaluation inputs correctly: the "
    "measured accuracy is below `policy.min_clean_accuracy`. No attacker is needed to "
    "exploit it.",
    "Retrain or fine-tune on more representative data, check the labels and the data split, "
    "then run `hardenml scan` again. Hardening (adversarial training) usually costs clean "
    "accuracy, so fix this first.",
    "high",
)
ROBUST = RuleHelp(
    "robust-accuracy",
    "Robust accuracy below the policy",
    "An attacker within the threat's budget flips too many inputs the model classified "
    "correctly: robust accuracy (right before the attack and still right under it) is below "
    "the `[[policy.robust]]` minimum. The flipped inputs are stored as evidence. The number "
    "is an upper bound: a stronger attack may flip more.",
    "Harden the model against the threat at that budget (`hardenml patch --with pgd_at` or "
    "`trades` for gradient attacks), then `hardenml validate` the patched model against this "
    "one and gate it. Lowering the threshold is a risk decision: record it with `hardenml "
    "findings accept-risk`.",
    "very-high",
)
CORRUPTION = RuleHelp(
    "corruption-accuracy",
    "Accuracy under a corruption below the policy",
    "Ordinary degradation of the inputs (noise, blur, compression, lighting, small shifts) "
    "at the given severity makes the model wrong too often. No attacker is needed: the "
    "world produces such inputs.",
    "Train with the corruption as data augmentation, or remove the degradation before the "
    "model sees it (a sanitizer patch such as `median_filter` for noise), then validate and "
    "gate again.",
    "very-high",
)
BEHAVIOUR = RuleHelp(
    "behavioural-suites",
    "Behavioural suite fails",
    "A `[[behaviour]]` suite (CheckList-style invariance, directional or minimum "
    "functionality test) fails on more of the tested inputs than it allows. The failing "
    "inputs are stored as evidence.",
    "Invariance: train with the transform as augmentation. Directional: check the feature's "
    "encoding and constrain the model to be monotonic in it. Minimum: collect or re-weight "
    "data for those inputs and check their labels.",
    "very-high",
)
SLICE = RuleHelp(
    "slice-gap",
    "A slice is less accurate than the rest",
    "The inputs of one declared slice are confidently less accurate than the rest of the "
    "data, by more than `policy.slice_tolerance`: traffic concentrated there sees a worse "
    "model.",
    "Collect or re-weight data for the slice and retrain; check it for label noise; add it "
    "to the replay buffer.",
    "high",
)
INTEGRITY = RuleHelp(
    "evaluation-integrity",
    "The robustness evaluation may be unreliable",
    "A check of the evaluation itself failed (gradient masking, black-box attacks beating "
    "white-box ones, accuracy that does not fall at a large budget, an attack that has not "
    "converged): the threat's robust accuracy may be overstated (Athalye et al. 2018).",
    'Do not trust the threat\'s numbers until fixed: evaluate with `attack = "autoattack"` '
    "and black-box attacks, attack through non-differentiable preprocessing with BPDA/EOT, "
    "and raise steps and restarts until robust accuracy stops falling.",
    "medium",
)
OTHER = RuleHelp(
    "other-measurements",
    "A measurement fails the policy",
    "A measurement of the run is outside what the policy allows.",
    "Read the finding's remediation and the measurement's definition in docs/scan.md.",
    "high",
)
GATE_VALIDATION = RuleHelp(
    "gate-validation",
    "Validation against the baseline failed or is missing",
    "The gated model differs from the released one and its `hardenml validate` against the "
    "baseline failed, or none is recorded while `policy.require_validation` is set: nothing "
    "shows that the change did no harm.",
    "Run `hardenml validate RELEASED CANDIDATE` and fix what it reports (a clean or robust "
    "accuracy that is not non-inferior, a calibration error that rose).",
    "high",
)
GATE_REGRESSION = RuleHelp(
    "gate-regression",
    "A metric fell below the released model",
    "A metric of the gated model is more than `policy.max_regression` below the value "
    "recorded for the last released model.",
    "Find which change lowered it (`hardenml findings show`, the HTML report's baseline "
    "columns), fix it, or release deliberately with `hardenml release --force`, which the "
    "ledger records.",
    "high",
)
GATE_OTHER = RuleHelp(
    "release-gate", "A release gate check failed", "A check of the release gate failed.",
    "Read the check's reason in the gate report and fix what it names.", "high",
)  # fmt: skip


def rule_help(config: HardenConfig, metric: str, threat: str | None) -> RuleHelp:
    """The help of a policy rule: by metric, and for a threat by its family."""
    if metric == "clean_accuracy":
        return CLEAN
    if metric.startswith("behaviour["):
        return BEHAVIOUR
    if metric == "slice_gap":
        return SLICE
    if metric.startswith("integrity:"):
        return INTEGRITY
    if metric == "robust_accuracy" or metric.startswith("corruption"):
        corruption = metric.startswith("corruption") or is_corruption(
            threat_attacks(config, None).get(threat or "")
        )
        return CORRUPTION if corruption else ROBUST
    return OTHER


def gate_help(base: str) -> RuleHelp:
    """The help of a gate check by its base name (`regression` of `regression[KEY]`)."""
    return {"validation": GATE_VALIDATION, "regression": GATE_REGRESSION}.get(base, GATE_OTHER)


def threat_sentence(config: HardenConfig, threat: str | None, budget: float | None) -> str | None:
    """Who the threat stands for at `budget`, in the threat's own words; None when the
    config declares no such threat or its attack cannot be built any more."""
    declared = next((t for t in config.threats if t.name == threat), None)
    if declared is None or budget is None:
        return None
    try:
        return make_threat(declared).describe(budget)
    except (ThreatLookupError, TypeError, ValueError):
        return None
