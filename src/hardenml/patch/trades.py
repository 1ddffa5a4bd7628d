"""TRADES: adversarial training that trades clean accuracy against robustness.

Zhang et al. 2019, "Theoretically Principled Trade-off between Robustness and Accuracy",
https://arxiv.org/abs/1901.08573. The loss is `CE(f(x), y) + beta * KL(f(x) || f(x'))`,
where `x'` maximises that KL divergence inside the L-inf ball (PGD on the KL from
`x + 0.001 * N(0, I)`, as in the authors' code). Larger `beta` buys robustness with
clean accuracy.

Arguments (keyword-only):
    eps: L-inf training budget in raw input units.
    beta: weight of the robustness term (default 6.0, the paper's choice for MNIST/CIFAR).
    steps: inner maximisation steps (default 7); step_size: default `2.5 * eps / steps`.
    epochs, lr, lr_schedule, batch_size, init, patience, eval_steps, warmup: as for PGD-AT.
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
)


@dataclass(kw_only=True, repr=False, eq=False)
class TRADES(AdversarialTraining):
    summary: ClassVar[str] = "TRADES (Zhang et al. 2019), when clean accuracy must be kept"
    beta: float = 6.0
    steps: int = 7
    step_size: float | None = None

    def schedule(self) -> Schedule:
        eps = float(self.eps or 0.0)
        return Schedule("trades", self.step_size or 2.5 * eps / max(self.steps, 1))

    def loss(
        self, net: nn.Module, x: Tensor, y: Tensor, schedule: Schedule, generator: torch.Generator
    ) -> Tensor:
        eps = schedule.scale * float(self.eps or 0.0)
        step = schedule.scale * schedule.step_size
        lo, hi = schedule.bounds
        net.eval()
        with torch.no_grad():
            clean_probs = F.softmax(net(x), dim=1)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        adv = (x + 0.001 * noise).clamp(lo, hi)
        floor, ceil = (x - eps).clamp_min(lo), (x + eps).clamp_max(hi)
        for _ in range(self.steps):
            adv.requires_grad_(True)
            with torch.enable_grad():
                kl = F.kl_div(F.log_softmax(net(adv), dim=1), clean_probs, reduction="sum")
                (grad,) = torch.autograd.grad(kl, adv)
            adv = torch.min(torch.max(adv.detach() + step * grad.sign(), floor), ceil)
        net.train()
        logits = net(x)
        robust = F.kl_div(
            F.log_softmax(net(adv.detach()), dim=1), F.softmax(logits, dim=1), reduction="batchmean"
        )
        return F.cross_entropy(logits, y) + self.beta * robust
