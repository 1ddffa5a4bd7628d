"""Projected gradient descent under an L-infinity budget.

Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks",
https://arxiv.org/abs/1706.06083. Maximises a loss (cross-entropy by default) with
signed-gradient steps, projecting onto the L-infinity ball of radius `budget` after each
step.

Arguments (keyword-only):
    steps: gradient steps per restart (default 20).
    step_size: absolute step; default `2.5 * budget / steps` (Madry et al.'s rule, which
        lets a run cross the whole ball from a random start).
    restarts: independent random starts; a sample counts as broken if any breaks it.
    random_start: start uniformly inside the ball (default True).
    early_stop: a sample stops being updated at the first iterate the model gets wrong,
        and that iterate is returned (default True). Turn it off to get the full-length
        loss-maximising trajectory, e.g. for adversarial training. Always off on a
        stochastic target, whose first wrong iterate is a coin flip on the boundary.
    loss: "ce" (cross-entropy, Madry et al.'s; default), "margin" (Carlini & Wagner's logit
        margin) or "dlr" (Croce & Hein's difference of logits ratio, 3+ classes). The last
        two cannot be hidden by a saturated softmax (confident samples, logits scaled by a
        large constant), where cross-entropy's gradient is exactly zero; see
        `hardenml.threats._gradient`.
Inputs `x` have shape `(n, *input_spec.shape)` in the raw input space.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from hardenml.targets import Target
from hardenml.threats._gradient import Loss, check_loss, projected_gradient
from hardenml.threats.base import Norm, Threat


class ProjectedGradientDescent(Threat):
    """PGD in the subclass's `norm`; the L-inf and L2 variants differ only in that."""

    effort: ClassVar[tuple[str, ...]] = ("steps", "restarts")

    def __init__(
        self,
        *,
        steps: int = 20,
        step_size: float | None = None,
        restarts: int = 1,
        random_start: bool = True,
        early_stop: bool = True,
        loss: Loss = "ce",
    ) -> None:
        if steps < 1 or restarts < 1:
            raise ValueError("steps and restarts must be at least 1")
        if step_size is not None and step_size <= 0:
            raise ValueError("step_size must be positive")
        check_loss(loss)
        self.steps = steps
        self.step_size = step_size
        self.restarts = restarts
        self.random_start = random_start
        self.early_stop = early_stop
        self.loss = loss

    def run(
        self, target: Target, x: Tensor, y: Tensor, budget: float, generator: torch.Generator
    ) -> Tensor:
        return projected_gradient(
            target.logits,
            x,
            y,
            bounds=target.input_spec.bounds,
            norm=self.norm,
            budget=budget,
            steps=self.steps,
            step_size=self.step_size if self.step_size is not None else 2.5 * budget / self.steps,
            restarts=self.restarts,
            start_random=self.random_start,
            early_stop=self.early_stop and not target.stochastic,
            generator=generator,
            loss=self.loss,
        )


class LinfPGD(ProjectedGradientDescent):
    norm: ClassVar[Norm] = "linf"
    title: ClassVar[str] = "PGD (Madry et al. 2018)"
