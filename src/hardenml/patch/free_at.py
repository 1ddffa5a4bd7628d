"""Free adversarial training from each example's carried perturbation: one forward and
backward pass per update, which serves the weights and the perturbation at once.

Shafahi, Najibi, Ghiasi, Xu, Dickerson, Studer, Davis, Taylor & Goldstein 2019,
"Adversarial Training for Free!", NeurIPS 2019, https://arxiv.org/abs/1904.12843 (code:
https://github.com/mahyarnajibi/FreeAdversarialTraining): the backward pass that gives
the weights' gradient on `x + delta` gives the input's gradient too, so the weights are
updated from it and `delta` takes a signed step of it (`fgsm_step` = eps, clipped to the
ball) in the same pass; each minibatch is replayed `m` times in a row, so the
perturbation gets `m` steps, and the epochs are divided by `m` to keep the cost. Their
`delta` is one tensor of the batch's shape carried from one minibatch to the next.

Here the perturbation is carried per training example instead, as ATTA does (Zheng et
al. 2020, `hardenml.patch.atta`): each visit trains the weights on `x + delta`, where
`delta` is where the example's last visit left it, and the same backward pass moves
`delta` one signed step (`step_size`, default eps / 2) for the next visit. Each batch is
trained on `replays` times in a row (default 2): every replay is a visit, so the batch's
perturbation takes two steps against nearly the current weights and the weights take two
updates, for two forward and backward passes: about the cost of an ATTA epoch (its attack
step, a backward pass to the input only, then its training pass) with twice its weight
updates per epoch, and so per holdout check. The weights train on the perturbation as it
was before the visit's step, one step behind ATTA's.

On the MNIST CNN at eps 0.3 (`bench/patch.py`: 3,600 training images, fine-tuned from
the clean model with a 3-epoch budget warm-up, Adam 2e-3 for every row, robust accuracy
under the ensemble on 1,000 test images) 8 epochs with 2 replays reached 0.676 against
10-step PGD-AT's 0.696 (10 epochs) in 0.30x its time: the aim of 2 points in a third,
met with no margin, under load. 9 epochs gave 0.731 (+3.5) in 0.39x, 7 gave 0.672 in
0.24x; ATTA's 9 epochs 0.641 in 0.28-0.32x (bench/README.md has every run and how the
epochs were chosen). Without replays (14 epochs at about the same time) it did worse
than ATTA: each epoch pays a holdout check, which costs a single-step method far more
in proportion than PGD-AT.

The shared loop (`hardenml.patch.adversarial`) checks the holdout after every epoch, keeps
the best checkpoint and watches for catastrophic overfitting with FGSM-RS's recovery
(`recovery`), as for ATTA.

Arguments (keyword-only), as for ATTA (`hardenml.patch.atta`):
    eps: L-inf budget in raw input units (the holdout is checked at it).
    step_size: the step each visit adds to the carried perturbation (default eps / 2).
    start: the memory before the first epoch: "zero" or "sign" (as for ATTA).
    replays: how many times in a row each batch is trained on (Shafahi et al.'s m;
        default 2); each replay is one forward and backward pass.
    recovery, pgd_steps, overfit_drop, overfit_gap, epochs, lr, lr_schedule, batch_size,
    init, patience, eval_steps, warmup: as for FGSM-RS. (ATTA's `prior` has no meaning
    here: there is no separate start to match; it must stay 0.)
Inputs have shape `(n, *input_spec.shape)` in the raw input space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hardenml.patch.adversarial import Schedule
from hardenml.patch.atta import ATTA
from hardenml.patch.base import PatchError


def free_loss(
    net: nn.Module,
    x: Tensor,
    y: Tensor,
    memory: Tensor,
    rows: Tensor,
    *,
    eps: float,
    step_size: float,
    bounds: tuple[float, float],
) -> Tensor:
    """Cross-entropy on `x + memory[rows]` whose backward pass also steps the memory.

    The start is the stored perturbation clipped to the eps ball (the warm-up's budget grows
    after it was stored) and the input to the bounds. When the returned loss (or a total
    that contains it) is backpropagated for the weights' update, the same pass gives the
    input's gradient, and a hook writes `memory[rows]` one signed step of `step_size`
    further along it, clipped to the ball and the bounds: the perturbation the next visit
    starts from, at no extra forward or backward pass. `net` must be in train mode.
    """
    lo, hi = bounds
    start = (x + memory[rows].clamp(-eps, eps)).clamp(lo, hi).detach().requires_grad_(True)

    def step_memory(grad: Tensor) -> None:
        delta = (start.detach() - x + step_size * grad.sign()).clamp(-eps, eps)
        memory[rows] = (x + delta).clamp(lo, hi) - x

    start.register_hook(step_memory)
    return F.cross_entropy(net(start), y)


@dataclass(kw_only=True, repr=False, eq=False)
class FreeAT(ATTA):
    summary: ClassVar[str] = (
        "free adversarial training (Shafahi et al. 2019) from each example's carried "
        "perturbation: one forward and backward pass per update"
    )
    replays: int = 2

    def batch_replays(self) -> int:
        return self.replays

    def _check(self) -> float:
        if self.replays < 1:
            raise PatchError(f"free_at: replays must be at least 1, got {self.replays}")
        if self.prior != 0:
            raise PatchError(
                "free_at: prior must be 0 (FGSM-PGI's regulariser needs a separate start "
                f"to match, which free training has not), got {self.prior}"
            )
        return super()._check()

    def loss(
        self, net: nn.Module, x: Tensor, y: Tensor, schedule: Schedule, generator: torch.Generator
    ) -> Tensor:
        if schedule.method != "fgsm":  # after a recovery switched to PGD
            return super().loss(net, x, y, schedule, generator)
        return carried_free_loss(self, net, x, y, schedule)


def carried_free_loss(
    patch: ATTA, net: nn.Module, x: Tensor, y: Tensor, schedule: Schedule
) -> Tensor:
    """`free_loss` on the batch `patch` was told of (`before_batch`), from its per-example
    memory, at the schedule's current budget and step (free AT's, and l2sp_finetune's with
    `adversary = "free_at"`)."""
    return free_loss(
        net,
        x,
        y,
        patch.memory_,
        patch.rows_.to(patch.memory_.device),
        eps=schedule.scale * float(patch.eps or 0.0),
        step_size=schedule.scale * schedule.step_size,
        bounds=schedule.bounds,
    )
