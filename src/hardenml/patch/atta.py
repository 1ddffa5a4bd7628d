"""Single-step adversarial training from each example's perturbation of the epoch before.

Zheng, Zhang, Gu, Lee & Prakash 2020, "Efficient Adversarial Training with Transferable
Adversarial Examples" (ATTA), CVPR 2020, https://arxiv.org/abs/1912.11969 (code:
https://github.com/haizhongzheng/ATTA): adversarial examples of one epoch stay
adversarial for the model of the next, so each training example keeps its perturbation,
and each epoch takes the attack's step from where the last one left it instead of from
noise. One gradient step per batch accumulates, over the epochs, into a many-step attack
at single-step cost (their ATTA-1, which they run on MNIST at eps 0.3). Their
`train_atta_mnist.py` with `mnist-atta-1-mat.json`: one step of 0.01 per batch, clipped
to the eps ball and to [0, 1], from `x + 0.001 * N(0, 1)` at the start, never reset,
cross-entropy on the result, which replaces the stored example; 60 epochs of 60,000
images (SGD 0.01, momentum 0.9).

Jia et al. 2022, "Prior-Guided Adversarial Initialization for Fast Adversarial
Training" (FGSM-PGI), ECCV 2022, https://arxiv.org/abs/2207.08859 (code:
https://github.com/jiaxiaojunQAQ/FGSM-PGI, `FGSM_MEP.py`) make the same carried
perturbation the start of FGSM-RS's step to stop catastrophic overfitting: the step is
alpha = eps, clipped to the ball and the bounds; the memory starts as
`clamp(alpha * sign(U[-eps, eps]), -eps, eps)` (random signs of size eps); and the loss
gains `lambda * MSE(f(x + delta_adv), f(x + delta_prior))` (lambda 10), which keeps the
model's output at the start close to its output at the adversarial point. (Their
`FGSM_MEP` also stores a momentum of the normalised gradients, decay 0.3, adds label
smoothing 0.6, and resets the memory every 40 of 110 epochs on CIFAR-10; they give no
MNIST settings.) Both the stored perturbation and the step's start are clipped to the
current budget, so the shared loop's eps warm-up applies to them.

Defaults here: each example's memory starts at zero, the step is `step_size` (default
eps / 2: two visits reach the edge of the ball, and ten fine-tuning epochs give each
example ten, against ATTA's sixty), `prior` (PGI's lambda) is 0. On the MNIST CNN at
eps 0.3 (`bench/patch.py`: 3,600 training images, fine-tuned from the clean model with a
3-epoch budget warm-up, robust accuracy under the ensemble, Adam 2e-3 for both) it
reached 0.641 in 9 epochs against 10-step PGD-AT's 0.696 (10 epochs), in 0.28x its
time: 5.5 points behind, where N-FGSM and GradAlign did not hold at 0.3 at all. In
small runs there (PGD-20 on 500 test images) a step of eps / 4 or eps did no better
than eps / 2 (eps set off the watch once), and FGSM-PGI's start, step eps and lambda 10
did worse (0.38 against 0.55): bench/README.md. The watch
for catastrophic overfitting and its recovery (FGSM-RS's, `recovery`) stay on; a
rollback restores the weights, not the memory (the stored perturbations stay valid
starting points). Free AT from the same memory (`hardenml.patch.free_at`: the training
pass's backward pass takes the step, each batch trained on twice) did better in the same
bench, 0.676 in 8 epochs in 0.30x PGD-AT's time.

Arguments (keyword-only), as for FGSM-RS (`hardenml.patch.fgsm_rs`) with these:
    eps: L-inf budget in raw input units (the holdout is checked at it).
    step_size: the step from the carried perturbation (default eps / 2).
    start: the memory before the first epoch: "zero" (ATTA's, up to its 0.001 noise) or
        "sign" (FGSM-PGI's, random signs of size min(step_size, eps)).
    prior: lambda of FGSM-PGI's output-matching regulariser (default 0: ATTA).
    recovery, pgd_steps, overfit_drop, overfit_gap, epochs, lr, lr_schedule, batch_size,
    init, patience, eval_steps, warmup: as for FGSM-RS.
Inputs have shape `(n, *input_spec.shape)` in the raw input space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hardenml.patch.adversarial import Schedule
from hardenml.patch.base import PatchContext, PatchError, PatchResult
from hardenml.patch.fgsm_rs import FGSMRS

Start = Literal["zero", "sign"]


def first_memory(
    shape: tuple[int, ...], *, start: Start, size: float, generator: torch.Generator
) -> Tensor:
    """The carried perturbations before the first epoch: zeros (ATTA), or FGSM-PGI's
    `size` times a random sign on every coordinate."""
    if start == "zero":
        return torch.zeros(shape)
    draw = torch.rand(shape, generator=generator)
    return size * torch.where(draw < 0.5, -1.0, 1.0)


def step_from_memory(
    net: nn.Module,
    x: Tensor,
    y: Tensor,
    carried: Tensor,
    *,
    eps: float,
    step_size: float,
    bounds: tuple[float, float],
) -> tuple[Tensor, Tensor]:
    """One signed-gradient step of cross-entropy from `x + carried`, clipped to the eps
    ball around `x` and to the bounds.

    The start is `carried` clipped to the ball and the bounds (in the warm-up the budget
    grows after the memory was stored). Returns the adversarial inputs (detached) and the
    logits at the start, still attached to the weights for FGSM-PGI's regulariser.
    """
    lo, hi = bounds
    delta = carried.clamp(-eps, eps)
    start = ((x + delta).clamp(lo, hi)).detach().requires_grad_(True)
    with torch.enable_grad():
        logits = net(start)
        loss = F.cross_entropy(logits, y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, start, retain_graph=True)
    delta = (start.detach() - x + step_size * grad.sign()).clamp(-eps, eps)
    return (x + delta).clamp(lo, hi).detach(), logits


@dataclass(kw_only=True, repr=False, eq=False)
class ATTA(FGSMRS):
    summary: ClassVar[str] = (
        "fast single-step adversarial training from each example's perturbation of the "
        "previous epoch (ATTA, Zheng et al. 2020; FGSM-PGI, Jia et al. 2022)"
    )
    start: Start = "zero"
    prior: float = 0.0

    def schedule(self) -> Schedule:
        return Schedule("fgsm", self.step_size or float(self.eps or 0.0) / 2)

    def _check(self) -> float:
        if self.start not in ("zero", "sign"):
            raise PatchError(f"atta: start must be 'zero' or 'sign', got {self.start!r}")
        if self.prior < 0:
            raise PatchError(
                f"atta: prior (FGSM-PGI's lambda) must be at least 0, got {self.prior}"
            )
        return super()._check()

    def run(self, ctx: PatchContext) -> PatchResult:
        eps = self._check()
        size = min(self.schedule().step_size, eps)
        self.memory_ = first_memory(
            ctx.fit.x.shape, start=self.start, size=size, generator=ctx.generator("atta memory")
        ).to(ctx.target.device)
        self.rows_ = torch.arange(0)
        return super().run(ctx)

    def before_batch(self, rows: Tensor) -> None:
        self.rows_ = rows

    def loss(
        self, net: nn.Module, x: Tensor, y: Tensor, schedule: Schedule, generator: torch.Generator
    ) -> Tensor:
        if schedule.method != "fgsm":  # after a recovery switched to PGD
            return super().loss(net, x, y, schedule, generator)
        rows = self.rows_.to(self.memory_.device)
        # The regulariser backpropagates through the start's logits, so they are taken in
        # train mode, as FGSM-PGI's code does; without it the step is crafted in eval mode.
        if self.prior == 0:
            net.eval()
        adv, start_logits = step_from_memory(
            net,
            x,
            y,
            self.memory_[rows],
            eps=schedule.scale * float(self.eps or 0.0),
            step_size=schedule.scale * schedule.step_size,
            bounds=schedule.bounds,
        )
        self.memory_[rows] = adv - x
        net.train()
        logits = net(adv)
        total = F.cross_entropy(logits, y)
        if self.prior > 0:
            total = total + self.prior * F.mse_loss(logits, start_logits)
        return total
