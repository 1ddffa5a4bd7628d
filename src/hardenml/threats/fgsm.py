"""Fast gradient sign method under an L-infinity budget.

Goodfellow, Shlens & Szegedy 2015, "Explaining and Harnessing Adversarial Examples",
https://arxiv.org/abs/1412.6572. One step of length `budget` along the sign of the
loss gradient: `x + budget * sign(grad_x L(f(x), y))`. Deterministic, so the generator is
not used.

Arguments (keyword-only): loss, "ce" (cross-entropy, the paper's; default), "margin" or
"dlr", as for `pgd` (`hardenml.threats.pgd`).

Inputs `x` have shape `(n, *input_spec.shape)` in the raw input space.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from hardenml.targets import Target
from hardenml.threats._gradient import Loss, check_loss, projected_gradient
from hardenml.threats.base import Norm, Threat


class FGSM(Threat):
    norm: ClassVar[Norm] = "linf"
    title: ClassVar[str] = "FGSM (Goodfellow et al. 2015)"

    def __init__(self, *, loss: Loss = "ce") -> None:
        check_loss(loss)
        self.loss = loss

    def run(
        self, target: Target, x: Tensor, y: Tensor, budget: float, generator: torch.Generator
    ) -> Tensor:
        # One full-budget step from x itself: PGD with steps=1 and no random start.
        return projected_gradient(
            target.logits,
            x,
            y,
            bounds=target.input_spec.bounds,
            norm=self.norm,
            budget=budget,
            steps=1,
            step_size=budget,
            restarts=1,
            start_random=False,
            early_stop=False,
            generator=generator,
            loss=self.loss,
        )
