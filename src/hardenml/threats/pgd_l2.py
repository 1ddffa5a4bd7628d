"""Projected gradient descent under an L2 budget.

Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks",
https://arxiv.org/abs/1706.06083. Maximises cross-entropy with steps along the
L2-normalised gradient, projecting onto the L2 ball of radius `budget` after each step.

Arguments (keyword-only):
    steps: gradient steps per restart (default 20).
    step_size: absolute L2 length of a step; default `2.5 * budget / steps`.
    restarts: independent random starts; a sample counts as broken if any breaks it.
    random_start: start at a random point of the ball: a Gaussian direction scaled to a
        uniformly drawn radius, as torchattacks' PGDL2 does (default True).
    early_stop: a sample stops being updated at the first iterate the model gets wrong,
        and that iterate is returned (default True).
Inputs `x` have shape `(n, *input_spec.shape)`; the budget is the L2 norm over all of a
sample's features in the raw input space.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from hardenml.targets import Target
from hardenml.threats._gradient import projected_gradient
from hardenml.threats.base import Norm, Threat


class L2PGD(Threat):
    norm: ClassVar[Norm] = "l2"

    def __init__(
        self,
        *,
        steps: int = 20,
        step_size: float | None = None,
        restarts: int = 1,
        random_start: bool = True,
        early_stop: bool = True,
    ) -> None:
        if steps < 1 or restarts < 1:
            raise ValueError("steps and restarts must be at least 1")
        if step_size is not None and step_size <= 0:
            raise ValueError("step_size must be positive")
        self.steps = steps
        self.step_size = step_size
        self.restarts = restarts
        self.random_start = random_start
        self.early_stop = early_stop

    def run(
        self, target: Target, x: Tensor, y: Tensor, budget: float, generator: torch.Generator
    ) -> Tensor:
        return projected_gradient(
            target,
            x,
            y,
            norm=self.norm,
            budget=budget,
            steps=self.steps,
            step_size=self.step_size if self.step_size is not None else 2.5 * budget / self.steps,
            restarts=self.restarts,
            start_random=self.random_start,
            early_stop=self.early_stop,
            generator=generator,
        )
