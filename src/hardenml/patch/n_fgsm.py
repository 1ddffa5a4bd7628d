"""Noise-FGSM (N-FGSM): single-step adversarial training that holds at large budgets.

de Jorge, Bibi, Volpi, Sanyal, Torr, Rogez & Dokania 2022, "Make Some Noise: Reliable and
Efficient Single-Step Adversarial Training", NeurIPS 2022, https://arxiv.org/abs/2202.01181
(code: https://github.com/pdejorge/N-FGSM). Each batch draws noise `eta ~ U[-k, k]^d`
with `k = 2 * eps`, clamps `x + eta` into the input bounds, takes one signed-gradient step
of length `alpha = eps` from there and trains on `x + eta + alpha * sign(grad)` clamped to
the bounds but NOT clipped back to the eps ball (their `train.py`: `--unif 2 --alpha eps`,
`--clip -1`). The training perturbation can reach 3 eps: the paper's finding is that
strong noise plus no clipping avoids catastrophic overfitting at large budgets where
FGSM-RS (Wong et al. 2020) collapses, at FGSM-RS's cost (one extra forward and backward
pass per batch), about a third of GradAlign's (Andriushchenko & Flammarion 2020,
https://arxiv.org/abs/2007.02617, whose double backpropagation it matches in robustness).
Their runs are CIFAR-10/100, SVHN and ImageNet with SGD and a cyclic learning rate, 30
epochs; SVHN ramps eps (and alpha) up over the first 5 epochs, as `warmup` does here.

On the MNIST CNN at eps 0.3, fine-tuned for 10 epochs with a 3-epoch budget warm-up
(`bench/patch.py`), it costs 0.17x PGD-AT's time but holds far less (ensemble robust
accuracy 0.175 against 0.510); the watch fired once, in the third epoch at 0.3. The
noise of 2 eps is 0.6 of MNIST's [0, 1] range, and the paper's settings are for budgets
up to 16/255 on CIFAR (bench/README.md has what was measured).

It is FGSM-RS with those settings (`hardenml.patch.fgsm_rs`), so the shared loop's watch
for catastrophic overfitting on the holdout and its recovery stay on: the paper reports
none at these settings, and a run that still overfits is rolled back and recovered like
FGSM-RS's (`recovery`).

Arguments (keyword-only), as for FGSM-RS with these defaults:
    eps: L-inf budget in raw input units (the holdout is checked at it).
    noise: k as a multiple of eps (2). step_size: alpha (default eps).
    project: False (no clipping to the ball); True gives back FGSM-RS's clipped step.
    random_start, recovery, pgd_steps, overfit_drop, overfit_gap, epochs, lr,
    lr_schedule, batch_size, init, patience, eval_steps, warmup: as for FGSM-RS.
Inputs have shape `(n, *input_spec.shape)` in the raw input space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hardenml.patch.adversarial import Schedule
from hardenml.patch.fgsm_rs import FGSMRS


@dataclass(kw_only=True, repr=False, eq=False)
class NFGSM(FGSMRS):
    summary: ClassVar[str] = (
        "fast single-step adversarial training with strong noise and no clipping "
        "(N-FGSM, de Jorge et al. 2022)"
    )
    noise: float = 2.0
    project: bool = False
    # de Jorge et al.'s code clamps x + eta into the data range before the gradient.
    start_in_bounds: ClassVar[bool] = True

    def schedule(self) -> Schedule:
        return Schedule("fgsm", self.step_size or float(self.eps or 0.0))
