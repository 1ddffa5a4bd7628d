"""Fast adversarial training: FGSM with a random start (FGSM-RS), watched for
catastrophic overfitting.

Wong, Rice & Kolter 2020, "Fast is better than free: Revisiting adversarial training",
https://arxiv.org/abs/2001.03994. Each batch takes one signed-gradient step of length
`step_size` from a uniform random point of the L-inf ball and trains on the result: about
the cost of two clean passes, against `steps + 1` for PGD-AT. A step that is too large
(or no random start) makes the model overfit to the single-step attack: FGSM accuracy
rises while PGD accuracy collapses. The shared loop detects it on the holdout after each
epoch and rolls back to the best checkpoint; `recovery` decides what follows.

Arguments (keyword-only):
    eps: L-inf training budget in raw input units.
    step_size: default `1.25 * eps` (the paper's alpha).
    random_start: start uniformly inside the ball (default True; False is plain FGSM
        training, which overfits catastrophically).
    noise: the random start's range as a multiple of eps (default 1: the ball).
    project: clip the perturbation back to the eps ball after the step (default True).
        `noise=2, project=False, step_size=eps` is N-FGSM (de Jorge et al. 2022, "Make
        Some Noise", https://arxiv.org/abs/2202.01181): larger noise and no clipping
        avoid catastrophic overfitting at large budgets at the same cost.
    recovery: after a rollback, "lower_step" halves the step (and switches to PGD if it
        happens again), "pgd" trains the remaining epochs with `pgd_steps`-step PGD,
        "stop" ends training at the best checkpoint. Default "lower_step".
    pgd_steps: PGD steps once switched (default 7).
    overfit_drop, overfit_gap: thresholds of the detection (see
        `hardenml.patch.adversarial.catastrophic_overfitting`): PGD accuracy losing this
        share of its best value while FGSM accuracy holds (0.5), or FGSM accuracy this far
        above PGD accuracy (0.3).
    epochs, lr, lr_schedule, batch_size, init, patience, eval_steps, warmup: as for PGD-AT
        (Wong et al. pair FGSM-RS with lr_schedule "cyclic").
Inputs have shape `(n, *input_spec.shape)` in the raw input space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hardenml.patch.adversarial import (
    AdversarialTraining,
    Schedule,
    linf_pgd,
)

Recovery = Literal["lower_step", "pgd", "stop"]


def fgsm_from_noise(
    net: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    step_size: float,
    noise: float,
    project: bool,
    bounds: tuple[float, float],
    generator: torch.Generator,
    start_in_bounds: bool = False,
) -> Tensor:
    """One signed-gradient step from `x + U[-noise, noise]`, detached and in bounds.

    By default the gradient is taken at the noisy point as drawn, even where it leaves the
    input bounds, as in Wong et al.'s code: on images with many pixels at a bound (MNIST's
    black background) clamping first would cancel half the noise there. `start_in_bounds`
    clamps the noisy point into the bounds first, as de Jorge et al.'s N-FGSM code does
    (then the step starts from a real input). `project` clips the perturbation to the eps
    ball (FGSM-RS); N-FGSM leaves it unclipped.
    """
    delta = torch.zeros_like(x)
    if noise > 0:
        draw = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        delta = (2 * draw - 1) * noise
        if start_in_bounds:
            delta = (x + delta).clamp(*bounds) - x
    start = (x + delta).requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(net(start), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, start)
    delta = delta + step_size * grad.sign()
    if project:
        delta = delta.clamp(-eps, eps)
    return (x + delta).clamp(*bounds).detach()


@dataclass(kw_only=True, repr=False, eq=False)
class FGSMRS(AdversarialTraining):
    summary: ClassVar[str] = "fast FGSM adversarial training with a random start (Wong et al. 2020)"
    step_size: float | None = None
    random_start: bool = True
    noise: float = 1.0
    project: bool = True
    recovery: Recovery = "lower_step"
    pgd_steps: int = 7
    overfit_drop: float = 0.5
    overfit_gap: float = 0.3
    # Whether the noisy start is clamped into the input bounds before the gradient.
    start_in_bounds: ClassVar[bool] = False

    def schedule(self) -> Schedule:
        return Schedule("fgsm", self.step_size or 1.25 * float(self.eps or 0.0))

    def overfitting_watch(self, schedule: Schedule) -> tuple[float, float] | None:
        return (self.overfit_drop, self.overfit_gap) if schedule.method == "fgsm" else None

    def recover(self, schedule: Schedule, times: int) -> str:
        if self.recovery == "stop":
            schedule.stop = True
            return "rolled back to the best checkpoint and stopped"
        if self.recovery == "lower_step" and times == 1 and schedule.method == "fgsm":
            old = schedule.step_size
            schedule.step_size = old / 2
            return f"rolled back to the best checkpoint; FGSM step {old:g} -> {old / 2:g}"
        schedule.method = "pgd"
        schedule.step_size = 2.5 * float(self.eps or 0.0) / self.pgd_steps
        return f"rolled back to the best checkpoint; {self.pgd_steps}-step PGD from here on"

    def loss(
        self, net: nn.Module, x: Tensor, y: Tensor, schedule: Schedule, generator: torch.Generator
    ) -> Tensor:
        eps = schedule.scale * float(self.eps or 0.0)
        step = schedule.scale * schedule.step_size
        net.eval()
        if schedule.method == "pgd":
            adv = linf_pgd(
                net,
                x,
                y,
                eps=eps,
                step_size=step,
                steps=self.pgd_steps,
                bounds=schedule.bounds,
                generator=generator,
            )
        else:
            adv = fgsm_from_noise(
                net,
                x,
                y,
                eps=eps,
                step_size=step,
                noise=self.noise * eps if self.random_start else 0.0,
                project=self.project,
                bounds=schedule.bounds,
                generator=generator,
                start_in_bounds=self.start_in_bounds,
            )
        net.train()
        return F.cross_entropy(net(adv), y)
