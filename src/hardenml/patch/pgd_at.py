"""PGD adversarial training (PGD-AT).

Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks",
https://arxiv.org/abs/1706.06083. Minimises the cross-entropy on L-inf PGD adversarial
examples crafted against the current weights each batch (the inner maximisation of the
saddle-point problem, eq. 2.1), with a uniform random start inside the ball.

Arguments (keyword-only):
    eps: L-inf training budget in raw input units (the workflow takes it from the failing
        policy.robust requirement when not given).
    steps: PGD steps per batch (default 7; Madry et al. use 40 on MNIST, fewer suffice when
        fine-tuning). step_size: default `2.5 * eps / steps`.
    epochs (5), lr (1e-3, Adam), batch_size (64).
    lr_schedule: "flat" (default) keeps `lr`; "cyclic" is Wong et al.'s one cycle, rising
        linearly from 0 to `lr` over the first 2/5 of the epochs and back to 0 at the end.
    init: "finetune" starts from the parent (released) weights, "scratch" from a fresh,
        seeded initialisation of `model.factory`.
    patience: stop after this many epochs without better holdout PGD accuracy (3); the
        best epoch's weights are kept.
    eval_steps: PGD steps of the holdout check after each epoch (10).
    warmup: epochs over which the training budget ramps linearly up to eps (default 0);
        large budgets (MNIST at 0.3) train better with a few.
Inputs have shape `(n, *input_spec.shape)` in the raw input space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hardenml.patch.adversarial import (
    AdversarialTraining,
    Schedule,
    linf_pgd,
)


@dataclass(kw_only=True, repr=False, eq=False)
class PGDAT(AdversarialTraining):
    summary: ClassVar[str] = "PGD adversarial training (Madry et al. 2018)"
    steps: int = 7
    step_size: float | None = None

    def schedule(self) -> Schedule:
        eps = float(self.eps or 0.0)
        return Schedule("pgd", self.step_size or 2.5 * eps / max(self.steps, 1))

    def loss(
        self, net: nn.Module, x: Tensor, y: Tensor, schedule: Schedule, generator: torch.Generator
    ) -> Tensor:
        net.eval()
        adv = linf_pgd(
            net,
            x,
            y,
            eps=schedule.scale * float(self.eps or 0.0),
            step_size=schedule.scale * schedule.step_size,
            steps=self.steps,
            bounds=schedule.bounds,
            generator=generator,
        )
        net.train()
        return F.cross_entropy(net(adv), y)
