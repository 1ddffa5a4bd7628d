"""Is the evaluation itself sound? Checks that catch an attack too weak to trust.

A scanner that overstates robustness is worse than none, and a check that blocks honest
models gets switched off. The checks follow Carlini et al. 2019, "On Evaluating
Adversarial Robustness" (https://arxiv.org/abs/1902.06705, section 5), Athalye, Carlini
and Wagner 2018, "Obfuscated Gradients Give a False Sense of Security"
(https://arxiv.org/abs/1802.00420) and AutoAttack's flags (Croce & Hein 2020,
https://github.com/fra31/auto-attack/blob/master/flags_doc.md), and are calibrated on
`hardenml.integrity_zoo` (`bench/integrity.py` measures them): silent on every honest
model there, each masked one caught by at least one.

Once per model (`check_model`), on the correctly classified inputs of a sub-sample:

- `stochastic_outputs`: the same inputs, five calls, outputs that differ (L2 distance of
  the L2-normalised outputs above 1e-4, or a changed prediction: AutoAttack's
  `check_randomized`): attacks see one draw per step, robust accuracy is overstated;
- `probability_outputs`: every output row is a probability distribution (AutoAttack's
  `check_range_output`): the model returns softmax outputs, not logits;
- `zero_gradients`: the margin loss `max_{j != y} z_j - z_y` has a zero or non-finite
  input gradient (quantisation, non-differentiable preprocessing, saturated outputs);
- `saturated_cross_entropy`: cross-entropy's gradient is exactly zero where the margin's
  is not: the softmax saturates in float32 (logits scaled by a large constant), so attacks
  on cross-entropy cannot move;
- `shattered_gradients`: a signed step of 1% of the input range along the margin gradient
  does not raise the margin loss. The gradient exists but says nothing about the loss one
  attack step away. (Piecewise-linear networks change activation pattern under tiny
  noise, and the cross-entropy gradients of confident samples point anywhere; neither is
  masking, and neither trips this rule, where the old cosine test of cross-entropy
  gradients at x and x + 1e-3 noise flagged 20-56% of honest inputs.)

Once per white-box gradient threat, at its largest budget (`check_threat`):

- `blackbox_beats_whitebox`: Square leaves robust accuracy more than
  `blackbox_tolerance` below the threat's (AutoAttack's `check_square_sr`);
- `no_convergence_to_zero`: at a budget of half the input range robust accuracy stays
  above `large_budget_max_accuracy`;
- `not_converged`: a stronger single attack (the threat, or an ensemble's strongest
  gradient stage with 4x the steps on its most likely target) moves robust accuracy by more
  than `convergence_tolerance` on the sub-sample, and more than random starts explain
  (exact McNemar test at 5% on the samples the two disagree on): down (not converged), or
  up (more steps should never help the model: its outputs are random, or the threat's
  number came from a stage that gradients cannot reproduce).

Each result says in words what it measured (`detail`) and what to do when flagged
(`advice`). The model's own randomness (torch's and numpy's global generators) is seeded
from `seed` while the checks run, and restored afterwards.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import binomtest
from torch import Tensor

from hardenml.config import IntegrityConfig
from hardenml.stats import paired_difference_interval, wilson_interval
from hardenml.targets import Target
from hardenml.threats import Threat, threat_class

MODEL_CHECKS = (
    "stochastic_outputs",
    "probability_outputs",
    "zero_gradients",
    "saturated_cross_entropy",
    "shattered_gradients",
)
THREAT_CHECKS = ("blackbox_beats_whitebox", "no_convergence_to_zero", "not_converged")
CHECKS = MODEL_CHECKS + THREAT_CHECKS

# AutoAttack's randomised-defence check: five calls, a tolerance on normalised outputs.
STOCHASTIC_CALLS = 5
STOCHASTIC_TOLERANCE = 1e-4
# AutoAttack's tolerance for "the outputs sum to one and lie in [0, 1]".
PROBABILITY_TOLERANCE = 1e-5
# The shattered-gradient step, as a fraction of the input range: about an attack step
# (PGD's 2.5 * eps / 20 is 0.0125 at eps 0.1). On the zoo's honest models no sample fails
# it at 0.1%, 1% or 3%; a gradient that flips sign faster than the step fails it.
SHATTER_STEP = 0.01
# The convergence check on an ensemble strengthens its targeted stage on this many target
# classes (the most likely wrong ones, where APGD-T flips most samples), with 4x the steps
# and no extra restart: 4x steps on one target cost 400 gradient steps per surviving sample
# at the defaults, where the ensemble spends 1,000 plus 5,000 Square queries, so all checks
# together stay under a quarter of the scan (`integrity_vs_scan_time` in bench/attacks.py).
CONVERGENCE_TARGETS = 1
# A change of robust accuracy counts only when it is more than the tolerance and unlikely
# to come from the random starts alone: on a sub-sample of 60, 3 samples (5%) that one
# attack breaks and the other does not are ordinary between two PGD runs on an honest CNN.
CONVERGENCE_SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class IntegrityResult:
    """One check's outcome. `threat` and `budget` are None for checks of the model itself."""

    check: str
    threat: str | None
    budget: float | None
    flagged: bool
    value: float
    limit: float
    n: int
    detail: str
    advice: str
    # 95% interval of `value`: Wilson for a share of the n samples, Newcombe's paired
    # interval for a difference of two attacks' robust accuracy on the same samples.
    ci: tuple[float, float]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Composite(Protocol):
    """A threat made of stages (the AutoAttack ensemble), each a threat of its own."""

    def attacks(self, classes: int) -> list[Threat]: ...


def has_blackbox_stage(threat: Threat, classes: int) -> bool:
    """Whether `threat` is, or ends with, a gradient-free attack on a norm ball."""
    stages = threat.attacks(classes) if isinstance(threat, Composite) else [threat]
    return any(not s.needs_gradients and s.norm in ("linf", "l2") for s in stages)


def by_check(results: list[IntegrityResult]) -> dict[str, list[IntegrityResult]]:
    """Results grouped by check, in `CHECKS` order: one finding per model and signal."""
    grouped: dict[str, list[IntegrityResult]] = {}
    for result in sorted(results, key=lambda r: CHECKS.index(r.check)):
        grouped.setdefault(result.check, []).append(result)
    return grouped


@contextmanager
def seeded_model_randomness(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's and numpy's global generators (which a randomised model draws from)
    for the block, and restore them afterwards."""
    devices = [device.index or 0] if device.type == "cuda" else []
    state = np.random.get_state()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            np.random.set_state(state)


def margin_loss(logits: Tensor, y: Tensor) -> Tensor:
    """`max_{j != y} z_j - z_y` per sample: positive once misclassified. Its gradient is
    that of a logit difference, which a saturated softmax cannot hide."""
    others = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return others - logits.gather(1, y[:, None]).squeeze(1)


@dataclass(frozen=True)
class GradientHealth:
    """Shares of `n` correctly classified inputs with each gradient problem."""

    n: int
    zero: float
    saturated_cross_entropy: float
    shattered: float


def _input_gradient(target: Target, x: Tensor, y: Tensor, loss_of: Any) -> tuple[Tensor, Tensor]:
    """(per-sample loss, flattened input gradient of its sum), detached."""
    with torch.enable_grad():
        points = x.detach().clone().requires_grad_(True)
        loss = loss_of(target.logits(points), y)
        (grad,) = torch.autograd.grad(loss.sum(), points)
    return loss.detach(), grad.detach().flatten(1)


def gradient_health(
    target: Target, x: Tensor, y: Tensor, *, step: float = SHATTER_STEP
) -> GradientHealth:
    """Zero, saturated and shattered gradients on the correctly classified `x` (`(n, *shape)`).

    Shattered: a signed step of `step` times the input range along the margin-loss
    gradient, clipped to the bounds, does not raise the margin loss. The first-order
    gain of that step is `|g|_1 * step`, so a gradient that describes the loss around x
    raises it; piecewise-linear and saturated honest models do.
    """
    lo, hi = target.input_spec.bounds
    x, y = x.to(target.device), y.to(target.device)
    with torch.no_grad():
        correct = target.logits(x).argmax(dim=1) == y
    x, y = x[correct], y[correct]
    n = int(x.shape[0])
    if n == 0:
        return GradientHealth(0, 0.0, 0.0, 0.0)
    loss, grad = _input_gradient(target, x, y, margin_loss)
    zero = ~torch.isfinite(grad).all(dim=1) | (grad.abs().amax(dim=1) == 0)
    _, ce_grad = _input_gradient(
        target, x, y, lambda z, labels: F.cross_entropy(z, labels, reduction="none")
    )
    saturated = ~zero & (ce_grad.abs().amax(dim=1) == 0)
    moved = (x + step * (hi - lo) * torch.nan_to_num(grad).sign().view_as(x)).clamp(lo, hi)
    with torch.no_grad():
        gain = margin_loss(target.logits(moved), y) - loss
    shattered = ~zero & (gain <= 0)
    return GradientHealth(
        n,
        float(zero.double().mean()),
        float(saturated.double().mean()),
        float(shattered.double().mean()),
    )


def output_variation(
    target: Target, x: Tensor, *, calls: int = STOCHASTIC_CALLS
) -> tuple[float, float]:
    """(share of inputs whose outputs differ between `calls` calls, largest difference).

    As AutoAttack's `check_randomized`: each output row is scaled to unit L2 norm, and an
    input differs when two calls' rows are more than `STOCHASTIC_TOLERANCE` apart or
    predict different classes.
    """
    with torch.no_grad():
        outputs = [target.logits(x.to(target.device)).double().cpu() for _ in range(calls)]
    scaled = [o / (o.norm(dim=1, keepdim=True) + 1e-10) for o in outputs]
    distance = torch.zeros(x.shape[0], dtype=torch.float64)
    changed = torch.zeros(x.shape[0], dtype=torch.bool)
    for i in range(calls):
        for j in range(i + 1, calls):
            distance = torch.maximum(distance, (scaled[i] - scaled[j]).norm(dim=1))
            changed |= outputs[i].argmax(dim=1) != outputs[j].argmax(dim=1)
    changed |= distance > STOCHASTIC_TOLERANCE
    return float(changed.double().mean()), float(distance.max()) if len(distance) else 0.0


def probability_rows(target: Target, x: Tensor) -> float:
    """Share of output rows that are probability distributions (in [0, 1], sum one)."""
    with torch.no_grad():
        out = target.logits(x.to(target.device)).double().cpu()
    tol = PROBABILITY_TOLERANCE
    rows = (
        (out.amin(dim=1) > -tol) & (out.amax(dim=1) < 1 + tol) & ((out.sum(dim=1) - 1).abs() < tol)
    )
    return float(rows.double().mean())


def share_interval(share: float, n: int) -> tuple[float, float]:
    """Wilson interval of a share of `n` samples (`share` is a count over n)."""
    return wilson_interval(round(share * n), n)


def robust_difference_interval(first: Tensor, second: Tensor) -> tuple[float, float]:
    """Interval for robust accuracy under `first` minus under `second`, paired per sample."""
    first, second = first.to(torch.bool).cpu(), second.to(torch.bool).cpu()
    return paired_difference_interval(
        int((first & ~second).sum()),
        int((~first & second).sum()),
        int((first & second).sum()),
        int((~first & ~second).sum()),
    )


def _blackbox_advice(blackbox: str | None) -> str:
    if blackbox is not None:
        return (
            f"the black-box attack decides: trust {blackbox!r}'s gradient-free stage, raise "
            "its queries"
        )
    return (
        'the black-box attack decides: add a threat with attack = "square", or gate on '
        'attack = "autoattack", which ends with Square'
    )


def check_model(
    target: Target,
    x: Tensor,
    y: Tensor,
    *,
    config: IntegrityConfig,
    seed: int,
    gradients: bool = True,
    blackbox: str | None = None,
) -> list[IntegrityResult]:
    """The checks of the model itself, once per model, on `x` of shape `(n, *shape)`.

    `gradients`: run the gradient checks (the scan asks for them when a white-box
    gradient threat runs and the target has gradients). `blackbox`: the name of a threat
    of the scan that is or ends with a gradient-free attack, for the advice.
    """
    n = int(x.shape[0])
    tol = config.gradient_tolerance
    results: list[IntegrityResult] = []
    with seeded_model_randomness(seed, target.device):
        varied, distance = output_variation(target, x)
        results.append(
            IntegrityResult(
                "stochastic_outputs",
                None,
                None,
                varied > 0,
                varied,
                0.0,
                n,
                f"outputs change between {STOCHASTIC_CALLS} calls on the same input for "
                f"{varied:.1%} of inputs (largest change {distance:.2g} in normalised outputs)",
                "the model is randomised: evaluate it with model.stochastic and EOT "
                "(expectation over transformation: gradients averaged over many draws), "
                "and its accuracy under a declared rule (majority vote or mean over calls)",
                ci=share_interval(varied, n),
            )
        )
        share = probability_rows(target, x)
        results.append(
            IntegrityResult(
                "probability_outputs",
                None,
                None,
                n > 0 and share == 1.0,
                share,
                1.0,
                n,
                f"{share:.1%} of output rows are probability distributions (in [0, 1], "
                "summing to one)",
                "the model returns probabilities, not logits: losses on them are squashed "
                "and saturate; attack the logits (or log-probabilities) instead",
                ci=share_interval(share, n),
            )
        )
        if not gradients or not target.has_gradients:
            return results
        health = gradient_health(target, x, y)
        m = health.n
        results += [
            IntegrityResult(
                "zero_gradients",
                None,
                None,
                health.zero > tol,
                health.zero,
                tol,
                m,
                f"gradients of the margin loss are zero or non-finite on {health.zero:.1%} of "
                f"{m} correctly classified inputs",
                "gradient attacks cannot move there: "
                + _blackbox_advice(blackbox)
                + "; declare the model's non-differentiable preprocessing (rounding, JPEG, "
                "bit depth) for BPDA, or attack a differentiable copy of it",
                ci=share_interval(health.zero, m),
            ),
            IntegrityResult(
                "saturated_cross_entropy",
                None,
                None,
                health.saturated_cross_entropy > tol,
                health.saturated_cross_entropy,
                tol,
                m,
                f"cross-entropy gradients are exactly zero on {health.saturated_cross_entropy:.1%}"
                f" of {m} correctly classified inputs whose margin gradient is not: the "
                "softmax saturates in float32 (logits scaled by a large constant?)",
                "attacks on cross-entropy (pgd, fgsm, apgd-ce) stall there: use a loss that "
                'saturation cannot hide (attack = "apgd-dlr", or the ensemble, whose APGD-T '
                "stage uses the scale-invariant DLR loss)",
                ci=share_interval(health.saturated_cross_entropy, m),
            ),
            IntegrityResult(
                "shattered_gradients",
                None,
                None,
                health.shattered > tol,
                health.shattered,
                tol,
                m,
                f"a step of {SHATTER_STEP:.0%} of the input range along the margin gradient "
                f"does not raise the margin loss on {health.shattered:.1%} of {m} correctly "
                "classified inputs: the gradient does not describe the loss one attack step "
                "away",
                "gradients mislead (shattered): "
                + _blackbox_advice(blackbox)
                + "; replace the preprocessing that shatters them by a differentiable "
                "approximation (BPDA)",
                ci=share_interval(health.shattered, m),
            ),
        ]
    return results


def _robust_rate(
    threat: Threat, target: Target, x: Tensor, y: Tensor, budget: float, seed: int
) -> tuple[float, Tensor]:
    result = threat(target, x, y, budget=budget, generator=torch.Generator().manual_seed(seed))
    # In float64: 3 of 60 must be exactly 0.05, not a hair above a tolerance of 0.05.
    return float(result.robust_correct.double().mean()), result.robust_correct


def _more_steps(threat: Threat, *, restart: bool = True) -> Threat | None:
    """The same attack with 4x the steps (and one more restart when `restart`), when it has
    those knobs; at most `CONVERGENCE_TARGETS` target classes for a targeted one."""
    params = set(inspect.signature(type(threat).__init__).parameters)
    current = {k: v for k, v in vars(threat).items() if k in params}
    if "steps" not in current:
        return None
    current["steps"] = int(current["steps"]) * 4
    if restart and "restarts" in current:
        current["restarts"] = int(current["restarts"]) + 1
    if "targets" in current:
        current["targets"] = min(int(current["targets"]), CONVERGENCE_TARGETS)
    return type(threat)(**current)


def stronger_attack(threat: Threat, classes: int) -> Threat | None:
    """The convergence check's attack: the threat with 4x the steps and one more restart;
    for an ensemble, its last gradient stage with 4x the steps on its most likely target
    (rerunning the whole ensemble at 4x would cost more than the scan it checks). None when
    there is no such knob."""
    if isinstance(threat, Composite):
        stages = [s for s in threat.attacks(classes) if s.needs_gradients]
        return _more_steps(stages[-1], restart=False) if stages else None
    return _more_steps(threat)


def paired_p_value(fell: int, rose: int) -> float:
    """Two-sided exact McNemar p-value of `fell` against `rose` discordant samples: how
    likely a split this uneven is when neither attack is stronger (random starts)."""
    if fell + rose == 0:
        return 1.0
    return float(binomtest(min(fell, rose), fell + rose, 0.5).pvalue)


def check_threat(
    name: str,
    threat: Threat,
    target: Target,
    x: Tensor,
    y: Tensor,
    budget: float,
    *,
    config: IntegrityConfig,
    seed: int,
    robust: Tensor | None = None,
) -> list[IntegrityResult]:
    """The checks of one white-box gradient threat at `budget` on `x` (`(n, *shape)`).

    `robust`: the scan's per-sample outcome of `threat` on these `x` at `budget` (True
    where the sample survived), so the threat is not rerun; without it, it runs here.
    """
    n = int(x.shape[0])
    lo, hi = target.input_spec.bounds
    classes = len(target.classes)
    composite_blackbox = has_blackbox_stage(threat, classes)
    results: list[IntegrityResult] = []
    with seeded_model_randomness(seed, target.device):
        if robust is None:
            base_rate, standing = _robust_rate(threat, target, x, y, budget, seed)
        else:
            standing = robust.to(torch.bool).cpu()
            base_rate = float(standing.double().mean())
        square = threat_class("square" if threat.norm == "linf" else "square-l2")(
            queries=config.blackbox_queries  # type: ignore[call-arg]
        )
        # Carlini et al.: a black-box attack must not outperform the white-box one. Some
        # extra flips are ordinary attack diversity; a large margin means the gradients
        # mislead.
        box_rate, box_standing = _robust_rate(square, target, x, y, budget, seed + 1)
        extra = int((standing & ~box_standing).sum())
        gap = base_rate - box_rate
        results.append(
            IntegrityResult(
                "blackbox_beats_whitebox",
                name,
                budget,
                gap > config.blackbox_tolerance,
                gap,
                config.blackbox_tolerance,
                n,
                f"Square ({config.blackbox_queries} queries) leaves robust accuracy at "
                f"{box_rate:.1%} where {name} leaves {base_rate:.1%}; it flips {extra} "
                f"samples {name} could not",
                (
                    f"{name}'s gradient stages are misled and its own Square stage did not "
                    "make up for it: raise its square_queries"
                    if composite_blackbox
                    else f"{name}'s gradients mislead it: gate on the worst case of {name} "
                    'and a black-box attack (attack = "square", or "autoattack", which ends '
                    "with Square)"
                ),
                ci=robust_difference_interval(standing, box_standing),
            )
        )

        large = (
            config.large_budget_fraction * (hi - lo)
            if threat.norm == "linf"
            else config.large_budget_fraction * (hi - lo) * float(np.sqrt(x[0].numel()))
        )
        rate, _ = _robust_rate(threat, target, x, y, large, seed + 2)
        results.append(
            IntegrityResult(
                "no_convergence_to_zero",
                name,
                large,
                rate > config.large_budget_max_accuracy,
                rate,
                config.large_budget_max_accuracy,
                n,
                f"{name} leaves robust accuracy at {rate:.1%} at budget {large:g}, where it "
                "should be near zero",
                f"{name} fails where adversarial examples must exist: its gradients are "
                "masked or its loss is flat; see the gradient checks, and do not trust its "
                "robust accuracy at any budget",
                ci=share_interval(rate, n),
            )
        )

        stronger = stronger_attack(threat, classes)
        if stronger is not None:
            strong_rate, strong_standing = _robust_rate(stronger, target, x, y, budget, seed + 3)
            change = strong_rate - base_rate
            fell = int((standing & ~strong_standing).sum())
            rose = int((~standing & strong_standing).sum())
            p_value = paired_p_value(fell, rose)
            moved = (
                abs(fell - rose) > config.convergence_tolerance * n + 1e-9
                and p_value < CONVERGENCE_SIGNIFICANCE
            )
            counts = (
                f"on the same {n} samples ({fell} broken by it alone, {rose} by {name} "
                f"alone; exact McNemar p = {p_value:.2g})"
            )
            if change < 0:
                detail = (
                    f"{stronger!r} lowers robust accuracy from {base_rate:.1%} to "
                    f"{strong_rate:.1%} {counts}: {name} has not converged"
                )
            else:
                detail = (
                    f"{stronger!r} leaves robust accuracy at {strong_rate:.1%} where {name} "
                    f"leaves {base_rate:.1%} {counts}; more steps should not raise it"
                )
            results.append(
                IntegrityResult(
                    "not_converged",
                    name,
                    budget,
                    moved,
                    change,
                    config.convergence_tolerance,
                    n,
                    detail,
                    f"raise {name}'s steps and restarts until robust accuracy stops falling"
                    if change < 0
                    else "robust accuracy that rises with more steps means randomness (see "
                    "stochastic_outputs: evaluate with model.stochastic and EOT) or a number "
                    f"that {name}'s gradient stages cannot reproduce (see the gradient checks)",
                    ci=robust_difference_interval(strong_standing, standing),
                )
            )
    return results
