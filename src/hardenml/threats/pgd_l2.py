"""Projected gradient descent under an L2 budget.

Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks",
https://arxiv.org/abs/1706.06083. Maximises a loss (cross-entropy by default) with steps
along the L2-normalised gradient, projecting onto the L2 ball of radius `budget` after
each step.

Arguments (keyword-only):
    steps: gradient steps per restart (default 20).
    step_size: absolute L2 length of a step; default `2.5 * budget / steps`.
    restarts: independent random starts; a sample counts as broken if any breaks it.
    random_start: start at a random point of the ball: a Gaussian direction scaled to a
        uniformly drawn radius, as torchattacks' PGDL2 does (default True).
    early_stop: a sample stops being updated at the first iterate the model gets wrong,
        and that iterate is returned (default True; always off on a stochastic target).
    loss: "ce" (default), "margin" or "dlr", as for `pgd` (`hardenml.threats.pgd`).
Inputs `x` have shape `(n, *input_spec.shape)`; the budget is the L2 norm over all of a
sample's features in the raw input space.
"""

from __future__ import annotations

from typing import ClassVar

from hardenml.threats.base import Norm
from hardenml.threats.pgd import ProjectedGradientDescent


class L2PGD(ProjectedGradientDescent):
    norm: ClassVar[Norm] = "l2"
    title: ClassVar[str] = "L2 PGD (Madry et al. 2018)"
