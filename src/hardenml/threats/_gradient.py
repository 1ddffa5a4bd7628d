"""Losses, input gradients and the projected-gradient loop shared by the white-box attacks.

FGSM, LinfPGD and L2PGD are thin wrappers around `projected_gradient`; APGD reuses the
losses and `loss_and_gradient`. Everything here works on tensors already on the
target's device; the threat base class does the checking, projection and scoring.

The ascent losses (`Loss`, per sample, larger is closer to a misclassification):
- "ce": cross-entropy. Saturates: where softmax rounds the true class to probability 1
  (confident samples, or logits scaled by a large constant) its gradient is exactly zero
  in float32, and the attack stands still while the model is not robust (Carlini &
  Wagner 2017, https://arxiv.org/abs/1608.04644, section V; Athalye et al. 2018).
- "margin": `max_{j != y} z_j - z_y` on the logits (Carlini & Wagner's f_6): no softmax,
  so no saturation; any number of classes.
- "dlr": the difference of logits ratio (Croce & Hein 2020, eq. 6,
  https://arxiv.org/abs/2003.01690), the margin divided by `z_pi1 - z_pi3`: also
  invariant to rescaling the logits. Needs at least 3 classes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from hardenml.targets import Target
from hardenml.threats.base import Norm, ThreatError, uniform_like

LossFn = Callable[[Tensor], Tensor]
# Inputs to logits: `Target.logits`, or a network under training.
Forward = Callable[[Tensor], Tensor]
Loss = Literal["ce", "margin", "dlr"]
LOSSES: tuple[Loss, ...] = ("ce", "margin", "dlr")


def ce_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Per-sample cross-entropy, shape `(n,)`."""
    return F.cross_entropy(logits, y, reduction="none")


def _true_and_runner_up(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return true, other


def margin_loss(logits: Tensor, y: Tensor) -> Tensor:
    """`max_{j != y} z_j - z_y` per sample, shape `(n,)`: positive once misclassified."""
    true, other = _true_and_runner_up(logits, y)
    return other - true


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Untargeted difference-of-logits-ratio loss (Croce & Hein 2020, eq. 6), shape `(n,)`:
    `-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3)`, the sorted logits `z_pi1 >= z_pi2 >= ...`."""
    classes = logits.shape[1]
    if classes < 3:
        raise ThreatError(
            f"the DLR loss needs at least 3 classes, the model has {classes}; use "
            'loss = "margin", which has no saturation either'
        )
    top = logits.topk(3, dim=1).values
    true, other = _true_and_runner_up(logits, y)
    return (other - true) / (top[:, 0] - top[:, 2] + 1e-12)


def check_loss(name: str) -> None:
    """A constructor's check of its `loss` argument: `ValueError` naming the choices."""
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {list(LOSSES)}, got {name!r}")


def ascent_loss(name: Loss) -> Callable[[Tensor, Tensor], Tensor]:
    """The per-sample loss called `name` (see the module docstring), as `f(logits, y)`."""
    check_loss(name)
    return {"ce": ce_loss, "margin": margin_loss, "dlr": dlr_loss}[name]


def dlr_targeted_loss(logits: Tensor, y: Tensor, y_target: Tensor) -> Tensor:
    """Targeted difference-of-logits-ratio loss (Croce & Hein 2020, eq. 7), shape `(n,)`.

    `-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`: invariant to shifting and rescaling
    the logits, so saturated softmax outputs do not hide the gradient. With exactly three
    classes there is no fourth logit, and `z_pi1 - z_pi3` would equal `z_y - z_t` whenever
    the target ranks last (a constant loss, no gradient), so the denominator is
    `z_pi1 - (z_pi2 + z_pi3) / 2` instead.
    """
    classes = logits.shape[1]
    if classes < 3:
        raise ThreatError(f"the DLR loss needs at least 3 classes, the model has {classes}")
    top = logits.topk(min(classes, 4), dim=1).values
    low = top[:, 2:4] if classes >= 4 else top[:, 1:3]
    scale = top[:, 0] - low.mean(dim=1)
    gap = logits.gather(1, y[:, None]).squeeze(1) - logits.gather(1, y_target[:, None]).squeeze(1)
    return -gap / (scale + 1e-12)


def loss_and_gradient(target: Target, x: Tensor, loss_fn: LossFn) -> tuple[Tensor, Tensor, Tensor]:
    """(logits, per-sample loss, input gradient of the summed loss), all detached. NaN
    gradient entries read as 0: a signed step along NaN would carry NaN into the input."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = target.logits(x)
        loss = loss_fn(logits)
        (grad,) = torch.autograd.grad(loss.sum(), x)
    return logits.detach(), loss.detach(), torch.nan_to_num(grad, nan=0.0)


def gradient_is_useless(target: Target, x: Tensor, y: Tensor, budget: float) -> Tensor:
    """Per sample, shape `(n,)`: True where the input gradient of the logit margin is zero
    or non-finite both at `x` and at a point inside the L-inf ball of radius `budget`.

    No signed-gradient step can move such a sample (`sign(0) = 0`), so the gradient
    stages of an attack would spend every iteration on it for nothing: an input-quantising
    model, whose gradient is zero almost everywhere, is the case in point (Athalye et al.
    2018, https://arxiv.org/abs/1802.00420). The margin, not cross-entropy, so that a
    saturated softmax (exactly zero cross-entropy gradients on confident samples) does not
    read as a dead gradient: the logits still move. The second point is a fixed
    checkerboard of `+-budget / 2`, not a random one, so the check draws nothing from the
    attack's generator. Two forward and backward passes per sample.
    """
    lo, hi = target.input_spec.bounds
    signs = (torch.arange(x[0].numel(), device=x.device) % 2 * 2 - 1).to(x.dtype)
    nearby = (x + budget / 2 * signs.view_as(x[0])).clamp(lo, hi)
    useless = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    for point in (x, nearby):
        with torch.enable_grad():
            point = point.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(margin_loss(target.logits(point), y).sum(), point)
        flat = grad.flatten(1)
        useless &= (~torch.isfinite(flat).all(dim=1)) | (flat.abs().amax(dim=1) == 0)
    return useless


def per_sample(values: Tensor, like: Tensor) -> Tensor:
    """Reshape `(n,)` values to broadcast over a batch shaped like `like`."""
    return values.view((-1,) + (1,) * (like.ndim - 1))


def l2_normalize(v: Tensor) -> Tensor:
    return v / per_sample(v.flatten(1).norm(p=2, dim=1).clamp_min(1e-12), v)


def random_start(x: Tensor, budget: float, norm: Norm, generator: torch.Generator) -> Tensor:
    """A seeded start inside the ball: uniform per coordinate (L-inf), or a uniformly drawn
    radius along a Gaussian direction (L2, as torchattacks' PGDL2 does)."""
    if norm == "linf":
        return x + (2 * uniform_like(x, generator) - 1) * budget
    direction = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    radius = torch.rand(x.shape[0], generator=generator, device=generator.device, dtype=x.dtype)
    delta = l2_normalize(direction.to(x.device)) * per_sample(radius.to(x.device) * budget, x)
    return x + delta


def projected_gradient(
    forward: Forward,
    x: Tensor,
    y: Tensor,
    *,
    bounds: tuple[float, float],
    norm: Norm,
    budget: float,
    steps: int,
    step_size: float,
    restarts: int,
    start_random: bool,
    early_stop: bool,
    generator: torch.Generator | None,
    loss: Loss = "ce",
) -> Tensor:
    """Ascent on `loss` (cross-entropy by default) with steps of length `step_size` in
    `norm`, projected each step.

    `forward` maps inputs to logits: a target's `logits` for the attacks, the network being
    trained for adversarial training, which reuses this loop. `generator` may be None only
    without `start_random`.

    Restarts run only on samples no earlier restart broke. With `early_stop`, a sample
    leaves the batch at the first iterate the model gets wrong, and that iterate is kept:
    later steps cannot undo a success, and broken samples cost no more model passes.
    """
    lo, hi = bounds
    if start_random and generator is None:
        raise ThreatError("a random start needs a generator")
    best = x.clone()
    standing = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    for restart in range(restarts):
        idx = standing.nonzero().flatten()
        if idx.numel() == 0:
            break
        x0, y0 = x[idx], y[idx]
        adv = (
            random_start(x0, budget, norm, generator).clamp(lo, hi)
            if start_random and generator is not None
            else x0
        )
        found, fooled = _ascend(
            forward,
            x0,
            y0,
            adv,
            bounds=bounds,
            norm=norm,
            budget=budget,
            steps=steps,
            step_size=step_size,
            early_stop=early_stop,
            # The last restart's candidates are scored by the base class anyway.
            score_last=restart < restarts - 1,
            loss_fn=ascent_loss(loss),
        )
        best[idx] = found
        standing[idx[fooled]] = False
    return best


def _ascend(
    forward: Forward,
    x: Tensor,
    y: Tensor,
    adv: Tensor,
    *,
    bounds: tuple[float, float],
    norm: Norm,
    budget: float,
    steps: int,
    step_size: float,
    early_stop: bool,
    score_last: bool,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
) -> tuple[Tensor, Tensor]:
    lo, hi = bounds
    found = adv.clone()
    fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    live = torch.arange(x.shape[0], device=x.device)
    # The L-inf box intersected with the input bounds, computed once instead of per step.
    floor, ceil = (x - budget).clamp_min(lo), (x + budget).clamp_max(hi)
    # A copy, because the L-inf step updates in place and `adv` may alias `x`.
    adv = adv.detach().clone()
    for _ in range(steps):
        with torch.enable_grad():
            adv.requires_grad_(True)
            logits = forward(adv)
            (grad,) = torch.autograd.grad(loss_fn(logits, y).sum(), adv)
        adv = adv.detach()
        with torch.no_grad():
            if early_stop:
                hit = logits.argmax(dim=1) != y
                if bool(hit.any()):
                    found[live[hit]] = adv[hit]
                    fooled[live[hit]] = True
                    keep = ~hit
                    live, x, y, adv, grad = live[keep], x[keep], y[keep], adv[keep], grad[keep]
                    floor, ceil = floor[keep], ceil[keep]
                    if live.numel() == 0:
                        return found, fooled
            if norm == "linf":
                adv = torch.clamp(adv.add_(grad.sign_(), alpha=step_size), floor, ceil)
            else:
                adv = adv + step_size * l2_normalize(grad)
                delta = adv - x
                length = delta.flatten(1).norm(p=2, dim=1).clamp_min(1e-12)
                shrink = per_sample((budget / length).clamp(max=1.0), delta)
                adv = (x + delta * shrink).clamp(lo, hi)
    found[live] = adv
    if score_last and live.numel():
        with torch.no_grad():
            fooled[live] = forward(adv).argmax(dim=1) != y
    return found, fooled
