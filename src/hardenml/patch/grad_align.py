"""FGSM training with the GradAlign regulariser against catastrophic overfitting.

Andriushchenko & Flammarion 2020, "Understanding and Improving Fast Adversarial Training",
NeurIPS 2020, https://arxiv.org/abs/2007.02617 (code:
https://github.com/tml-epfl/understanding-fast-adv-training). Catastrophic overfitting
comes with the input gradients inside the ball ceasing to point the same way (the network
turns locally non-linear, so one linear step no longer finds the worst case). GradAlign
adds to the FGSM loss

    lambda * E_{eta ~ U[-eps, eps]^d} [1 - cos(grad_x loss(x), grad_x loss(x + eta))]

(eq. 6), differentiated through both gradients' computation (double backpropagation),
so training keeps the loss locally linear and the single step stays a good attack. As in
their `train.py`: the FGSM step starts from x (`--attack_init=zero`) and has length eps,
its gradient (taken anyway for the step) is the first one, detached; the second is taken
at x + eta (eta drawn uniformly, x + eta not clamped) with `create_graph=True`, and the
only one backpropagated into the weights (their README: backpropagating through both
"doesn't make a substantial difference"); examples whose gradient is zero are left out of
the mean. The cost is about three FGSM passes per batch, so N-FGSM
(`hardenml.patch.n_fgsm`) and ATTA (`hardenml.patch.atta`, retrain's default) are
cheaper; GradAlign is here to compare with and for models where noise alone does not
hold. Their scripts set lambda log-linearly in eps
for CIFAR-10 (0.2 at 8/255, `exp(eps/8 * ln 10 + ln 0.02)`) and SVHN (about 1.7-2.5);
they give none for MNIST, so the default 1.0 is ours and untuned. On the MNIST CNN at
eps 0.3 (`bench/patch.py`) it did not keep the watch from firing two epochs after the
budget reached 0.3 (bench/README.md).

It is FGSM-RS's schedule otherwise (`hardenml.patch.fgsm_rs`), so the shared loop's watch
for catastrophic overfitting and its recovery stay on.

Arguments (keyword-only), as for FGSM-RS with these defaults:
    eps: L-inf budget in raw input units. step_size: default eps.
    align: lambda, the regulariser's weight (1.0).
    random_start: False (FGSM from x, as GradAlign trains); True starts (and takes the
        first gradient) at a uniform point of the ball, as their `--attack_init=random`.
    noise, project, recovery, pgd_steps, overfit_drop, overfit_gap, epochs, lr,
    lr_schedule, batch_size, init, patience, eval_steps, warmup: as for FGSM-RS.
Inputs have shape `(n, *input_spec.shape)` in the raw input space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hardenml.patch.adversarial import Schedule
from hardenml.patch.base import PatchError
from hardenml.patch.fgsm_rs import FGSMRS


def input_gradient(net: nn.Module, x: Tensor, y: Tensor, *, create_graph: bool) -> Tensor:
    """The gradient of the mean cross-entropy with respect to the inputs `x`; with
    `create_graph` it stays differentiable in the weights (for double backpropagation)."""
    start = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(net(start), y)
        (grad,) = torch.autograd.grad(loss, start, create_graph=create_graph)
    return grad


def gradient_misalignment(first: Tensor, second: Tensor) -> Tensor:
    """Mean `1 - cos` between matching rows of two input-gradient batches, over the rows
    where both are nonzero (a zero gradient has no direction); 0 when none is."""
    a, b = first.flatten(1), second.flatten(1)
    keep = (a.norm(dim=1) > 0) & (b.norm(dim=1) > 0)
    if not bool(keep.any()):
        return second.sum() * 0.0  # still attached to the graph, so backward runs
    return 1.0 - F.cosine_similarity(a[keep], b[keep], dim=1).mean()


@dataclass(kw_only=True, repr=False, eq=False)
class GradAlign(FGSMRS):
    summary: ClassVar[str] = (
        "FGSM adversarial training with gradient-alignment regularisation "
        "(GradAlign, Andriushchenko & Flammarion 2020)"
    )
    random_start: bool = False
    align: float = 1.0

    def schedule(self) -> Schedule:
        return Schedule("fgsm", self.step_size or float(self.eps or 0.0))

    def _check(self) -> float:
        if self.align < 0:
            raise PatchError(f"grad_align: align (lambda) must be at least 0, got {self.align}")
        return super()._check()

    def loss(
        self, net: nn.Module, x: Tensor, y: Tensor, schedule: Schedule, generator: torch.Generator
    ) -> Tensor:
        if schedule.method != "fgsm":  # after a recovery switched to PGD
            return super().loss(net, x, y, schedule, generator)
        eps = schedule.scale * float(self.eps or 0.0)
        step = schedule.scale * schedule.step_size
        lo, hi = schedule.bounds
        start = torch.zeros_like(x)
        if self.random_start:
            draw = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            start = (2 * draw - 1) * self.noise * eps
        net.eval()
        first = input_gradient(net, x + start, y, create_graph=False)
        delta = start + step * first.sign()
        if self.project:
            delta = delta.clamp(-eps, eps)
        adv = (x + delta).clamp(lo, hi).detach()
        net.train()
        total = F.cross_entropy(net(adv), y)
        if self.align > 0:
            draw = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            second = input_gradient(net, x + (2 * draw - 1) * eps, y, create_graph=True)
            total = total + self.align * gradient_misalignment(first, second)
        return total
