"""Is the evaluation itself sound? Checks that catch an attack too weak to trust.

A scanner that overstates robustness is worse than none. Following Carlini et al. 2019,
"On Evaluating Adversarial Robustness" (https://arxiv.org/abs/1902.06705, section 5) and
Athalye, Carlini and Wagner 2018, "Obfuscated Gradients Give a False Sense of Security"
(https://arxiv.org/abs/1802.00420), each white-box gradient threat is checked on a
sub-sample for four signs of an unreliable evaluation:

- `blackbox_beats_whitebox`: a gradient-free attack (Square) flips samples that the
  gradient attack could not, at the same budget: the gradients mislead (masking);
- `no_convergence_to_zero`: with a budget as large as the input range, robust accuracy
  should be near zero; if it is not, the attack is not finding the adversarial examples
  that must exist;
- `not_converged`: more steps and restarts still lower robust accuracy materially;
- `broken_gradients`: input gradients are zero, non-finite, or shattered (nearly
  uncorrelated between an input and a neighbour a hair away) on a large share of inputs.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from hardenml.config import IntegrityConfig
from hardenml.targets import Target
from hardenml.threats import Threat, threat_class

CHECKS = ("blackbox_beats_whitebox", "no_convergence_to_zero", "not_converged", "broken_gradients")


@dataclass(frozen=True)
class IntegrityResult:
    check: str
    threat: str
    budget: float
    flagged: bool
    value: float
    limit: float
    n: int
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _robust_rate(
    threat: Threat, target: Target, x: Tensor, y: Tensor, budget: float, seed: int
) -> tuple[float, Tensor]:
    result = threat(target, x, y, budget=budget, generator=torch.Generator().manual_seed(seed))
    return float(result.robust_correct.float().mean()), result.robust_correct


def _stronger(threat: Threat) -> Threat | None:
    """The same attack with 4x the steps (same step size, so 4x the reach) and one more
    restart, when it has those knobs."""
    params = set(inspect.signature(type(threat).__init__).parameters)
    current = {k: v for k, v in vars(threat).items() if k in params}
    if "steps" not in current:
        return None
    current["steps"] = int(current["steps"]) * 4
    if "restarts" in current:
        current["restarts"] = int(current["restarts"]) + 1
    return type(threat)(**current)


def gradient_health(
    target: Target, x: Tensor, y: Tensor, *, seed: int, jitter: float = 1e-3
) -> tuple[float, float]:
    """(share of inputs with zero or non-finite gradients, share with shattered ones).

    Shattered: the cosine similarity between the loss gradient at x and at x + tiny
    noise is below 0.5, i.e. the gradient does not describe the loss around x.
    """
    lo, hi = target.input_spec.bounds
    gen = torch.Generator().manual_seed(seed)
    noise = (torch.rand(x.shape, generator=gen) * 2 - 1) * jitter * (hi - lo)

    def grad_at(points: Tensor) -> Tensor:
        points = points.to(target.device).clone().requires_grad_(True)
        loss = F.cross_entropy(target.logits(points), y.to(target.device), reduction="sum")
        (grad,) = torch.autograd.grad(loss, points)
        return grad.detach().flatten(1).cpu()

    g0 = grad_at(x)
    g1 = grad_at((x + noise).clamp(lo, hi))
    broken = (~torch.isfinite(g0).all(dim=1)) | (g0.abs().amax(dim=1) == 0)
    cosine = F.cosine_similarity(torch.nan_to_num(g0), torch.nan_to_num(g1), dim=1)
    shattered = (~broken) & (cosine < 0.5)
    return float(broken.float().mean()), float(shattered.float().mean())


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
) -> list[IntegrityResult]:
    """Run the four checks for one gradient threat at its largest declared budget."""
    n = int(x.shape[0])
    lo, hi = target.input_spec.bounds
    results: list[IntegrityResult] = []
    square_cls = threat_class("square" if threat.norm == "linf" else "square-l2")
    square = square_cls(queries=config.blackbox_queries)  # type: ignore[call-arg]
    # Carlini et al.: a black-box attack must not outperform the white-box one. Some extra
    # flips are ordinary attack diversity; a large margin means the gradients mislead.
    base_rate, standing = _robust_rate(threat, target, x, y, budget, seed)
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
            f"{box_rate:.1%} where {name} leaves {base_rate:.1%}; it flips {extra} samples "
            f"{name} could not",
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
            f"robust accuracy {rate:.1%} at budget {large:g}, where it should be near zero",
        )
    )

    stronger = _stronger(threat)
    if stronger is not None:
        strong_rate, _ = _robust_rate(stronger, target, x, y, budget, seed + 3)
        drop = base_rate - strong_rate
        results.append(
            IntegrityResult(
                "not_converged",
                name,
                budget,
                drop > config.convergence_tolerance,
                drop,
                config.convergence_tolerance,
                n,
                f"4x steps and one more restart lower robust accuracy from "
                f"{base_rate:.1%} to {strong_rate:.1%} on the same {n} samples",
            )
        )

    broken, shattered = gradient_health(target, x, y, seed=seed + 4)
    bad = broken + shattered
    results.append(
        IntegrityResult(
            "broken_gradients",
            name,
            budget,
            bad > config.gradient_tolerance,
            bad,
            config.gradient_tolerance,
            n,
            f"{broken:.1%} of inputs have zero or non-finite gradients, {shattered:.1%} "
            "shattered ones",
        )
    )
    return results
