"""Projected gradient descent under an L-infinity budget.

Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks",
https://arxiv.org/abs/1706.06083. Maximises cross-entropy with signed-gradient steps,
projecting onto the L-infinity ball of radius `budget` after each step.

Arguments (keyword-only):
    steps: gradient steps per restart (default 20).
    step_size: absolute step; default `2.5 * budget / steps` (Madry et al.'s rule, which
        lets a run cross the whole ball from a random start).
    restarts: independent random starts; a sample counts as broken if any breaks it.
    random_start: start uniformly inside the ball (default True).
Inputs `x` have shape `(n, *input_spec.shape)` in the raw input space.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from hardenml.targets import Target
from hardenml.threats.base import Norm, Threat, uniform_like


class LinfPGD(Threat):
    norm: ClassVar[Norm] = "linf"

    def __init__(
        self,
        *,
        steps: int = 20,
        step_size: float | None = None,
        restarts: int = 1,
        random_start: bool = True,
    ) -> None:
        if steps < 1 or restarts < 1:
            raise ValueError("steps and restarts must be at least 1")
        if step_size is not None and step_size <= 0:
            raise ValueError("step_size must be positive")
        self.steps = steps
        self.step_size = step_size
        self.restarts = restarts
        self.random_start = random_start

    def run(
        self, target: Target, x: Tensor, y: Tensor, budget: float, generator: torch.Generator
    ) -> Tensor:
        lo, hi = target.input_spec.bounds
        alpha = self.step_size if self.step_size is not None else 2.5 * budget / self.steps
        best = x.clone()
        standing = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(self.restarts):
            idx = standing.nonzero().flatten()
            if idx.numel() == 0:
                break
            x0, y0 = x[idx], y[idx]
            adv = x0.clone()
            if self.random_start:
                adv = (adv + (2 * uniform_like(adv, generator) - 1) * budget).clamp(lo, hi)
            for _ in range(self.steps):
                adv.requires_grad_(True)
                loss = F.cross_entropy(target.logits(adv), y0, reduction="sum")
                (grad,) = torch.autograd.grad(loss, adv)
                with torch.no_grad():
                    adv = adv + alpha * grad.sign()
                    adv = torch.min(torch.max(adv, x0 - budget), x0 + budget).clamp(lo, hi)
            with torch.no_grad():
                fooled = target.logits(adv).argmax(dim=1) != y0
            best[idx] = adv.detach()
            standing[idx[fooled]] = False
        return best
