"""Auto-PGD (APGD) under an L-infinity budget, with cross-entropy or targeted DLR loss.

Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", https://arxiv.org/abs/2003.01690 (reference code:
https://github.com/fra31/auto-attack). Signed-gradient ascent with momentum 0.75 and a
per-sample step size that starts at `2 * budget` and is halved at checkpoints
`w_j = ceil(p_j * steps)` (p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03,
0.06)) when, since the last checkpoint, the loss rose in at most `rho` of the steps, or
the step was not halved last time and the best loss did not improve. A halving restarts
the sample from its best point so far. As in the reference code, a sample's best loss
and its first misclassified iterate are kept; here a misclassified sample also leaves
the batch, which changes no other sample's trajectory.

LinfAPGDCE arguments (keyword-only):
    steps: iterations per restart (default 100, the paper's), one forward and backward
        pass each; restarts: random starts on samples still standing (default 1);
    rho: the oscillation threshold of the step-size rule (default 0.75).
LinfAPGDDLR (AutoAttack's APGD-T) takes the same plus
    targets: how many target classes to try, the runners-up of the clean logits in
        order (default 9; capped at classes - 1). Each target gets `steps` iterations on
        the samples no earlier target broke. Needs at least 3 classes.
Inputs `x` have shape `(n, *input_spec.shape)` in the raw input space.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import torch
from torch import Tensor

from hardenml.targets import Target
from hardenml.threats._gradient import (
    ce_loss,
    dlr_targeted_loss,
    loss_and_gradient,
    per_sample,
)
from hardenml.threats.base import Norm, Threat, ThreatError, uniform_like


@dataclass
class _State:
    """Per-sample tensors of one APGD run; `select` keeps the rows still standing."""

    live: Tensor
    x: Tensor
    y: Tensor
    y_target: Tensor
    floor: Tensor
    ceil: Tensor
    adv: Tensor
    adv_old: Tensor
    grad: Tensor
    best: Tensor
    grad_best: Tensor
    loss_best: Tensor
    loss_best_last: Tensor
    reduced_last: Tensor
    step: Tensor
    history: Tensor  # (n, steps + 1) losses of the iterates, the start in column 0

    def select(self, keep: Tensor) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name)[keep])


def checkpoints(steps: int) -> list[int]:
    """The iterations at which the step-size conditions are checked (paper, section 3.2).

    Written as the reference code does: the gap between checkpoints starts at 22% of the
    steps and shrinks by 3% per checkpoint down to 6%, each rounded down to at least one.
    """
    gap = max(int(0.22 * steps), 1)
    shrink, smallest = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    points, at = [], gap
    while at <= steps:
        points.append(at)
        gap = max(gap - shrink, smallest)
        at += gap
    return points


def apgd(
    target: Target,
    x: Tensor,
    y: Tensor,
    y_target: Tensor | None,
    *,
    budget: float,
    steps: int,
    rho: float,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """One APGD run; `(candidates, fooled)`. Cross-entropy loss, or targeted DLR towards
    `y_target` when given. Candidates are the first misclassified iterate (the latest
    on a stochastic target), else the iterate with the highest loss."""
    lo, hi = target.input_spec.bounds
    n = x.shape[0]
    # Start on the ball's surface in the direction of uniform noise, as the reference does.
    t = 2 * uniform_like(x, generator) - 1
    start = x + budget * t / per_sample(t.flatten(1).abs().amax(dim=1).clamp_min(1e-12), t)
    start = start.clamp(lo, hi)

    def loss_of(s: _State) -> tuple[Tensor, Tensor, Tensor]:
        if y_target is None:
            return loss_and_gradient(target, s.adv, lambda z: ce_loss(z, s.y))
        return loss_and_gradient(target, s.adv, lambda z: dlr_targeted_loss(z, s.y, s.y_target))

    found = start.clone()
    fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
    s = _State(
        live=torch.arange(n, device=x.device),
        x=x,
        y=y,
        y_target=y if y_target is None else y_target,
        floor=(x - budget).clamp_min(lo),
        ceil=(x + budget).clamp_max(hi),
        adv=start,
        adv_old=start,
        grad=torch.zeros_like(x),
        best=start,
        grad_best=torch.zeros_like(x),
        loss_best=torch.zeros(n, device=x.device),
        loss_best_last=torch.zeros(n, device=x.device),
        # The reference starts as if the step had just been halved: condition 2 cannot
        # fire at the first checkpoint.
        reduced_last=torch.ones(n, dtype=torch.bool, device=x.device),
        step=torch.full((n,), 2.0 * budget, device=x.device, dtype=x.dtype),
        history=torch.zeros(n, steps + 1, device=x.device),
    )
    marks = set(checkpoints(steps))
    last_mark = 0
    for i in range(steps + 1):
        if i > 0:
            # Momentum 0.75 after the first step (the paper's alpha), none on the first.
            a = 0.75 if i > 1 else 1.0
            step = per_sample(s.step, s.adv)
            z = torch.clamp(s.adv + step * s.grad.sign(), s.floor, s.ceil)
            moved = s.adv + a * (z - s.adv) + (1 - a) * (s.adv - s.adv_old)
            s.adv_old, s.adv = s.adv, torch.clamp(moved, s.floor, s.ceil)
        logits, loss, grad = loss_of(s)
        hit = logits.argmax(dim=1) != s.y
        if bool(hit.any()):
            found[s.live[hit]] = s.adv[hit]
            fooled[s.live[hit]] = True
        # On a stochastic target a sample goes on and keeps its latest wrong iterate (as the
        # reference code does for every model): the first one is a coin flip on the boundary.
        if bool(hit.any()) and not target.stochastic:
            keep = ~hit
            s.select(keep)
            logits, loss, grad = logits[keep], loss[keep], grad[keep]
            if s.live.numel() == 0:
                break
        s.grad = grad
        s.history[:, i] = loss
        if i == 0:
            s.best, s.grad_best, s.loss_best = s.adv, grad, loss
            s.loss_best_last = loss
            continue
        better = loss > s.loss_best
        s.best = torch.where(per_sample(better, s.adv), s.adv, s.best)
        s.grad_best = torch.where(per_sample(better, grad), grad, s.grad_best)
        s.loss_best = torch.where(better, loss, s.loss_best)
        if i in marks:
            window = s.history[:, last_mark : i + 1]
            rises = (window[:, 1:] > window[:, :-1]).sum(dim=1)
            # `<=` as in the reference code (the paper writes `<`).
            oscillating = rises <= rho * (i - last_mark)
            stalled = ~s.reduced_last & (s.loss_best_last >= s.loss_best)
            halve = oscillating | stalled
            s.reduced_last, s.loss_best_last = halve, s.loss_best
            s.step = torch.where(halve, s.step / 2, s.step)
            s.adv = torch.where(per_sample(halve, s.adv), s.best, s.adv)
            s.grad = torch.where(per_sample(halve, s.grad), s.grad_best, s.grad)
            last_mark = i
    unfooled = ~fooled[s.live]
    found[s.live[unfooled]] = s.best[unfooled]
    return found, fooled


class _LinfAPGD(Threat):
    norm: ClassVar[Norm] = "linf"
    title: ClassVar[str] = "APGD (Croce & Hein 2020)"
    effort: ClassVar[tuple[str, ...]] = ("steps", "restarts")

    def __init__(self, *, steps: int = 100, restarts: int = 1, rho: float = 0.75) -> None:
        if steps < 1 or restarts < 1:
            raise ValueError("steps and restarts must be at least 1")
        if not 0 < rho < 1:
            raise ValueError("rho must lie in (0, 1)")
        self.steps = steps
        self.restarts = restarts
        self.rho = rho

    def _runs(
        self,
        target: Target,
        x: Tensor,
        y: Tensor,
        y_targets: list[Tensor | None],
        budget: float,
        generator: torch.Generator,
    ) -> Tensor:
        best = x.clone()
        standing = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        for y_target in y_targets:
            for _ in range(self.restarts):
                idx = standing.nonzero().flatten()
                if idx.numel() == 0:
                    return best
                found, fooled = apgd(
                    target,
                    x[idx],
                    y[idx],
                    None if y_target is None else y_target[idx],
                    budget=budget,
                    steps=self.steps,
                    rho=self.rho,
                    generator=generator,
                )
                # A sample keeps its first success; a standing one takes the newest run.
                best[idx] = found
                standing[idx[fooled]] = False
        return best


class LinfAPGDCE(_LinfAPGD):
    """APGD on cross-entropy (AutoAttack's APGD-CE); see the module docstring."""

    def run(
        self, target: Target, x: Tensor, y: Tensor, budget: float, generator: torch.Generator
    ) -> Tensor:
        return self._runs(target, x, y, [None], budget, generator)


class LinfAPGDDLR(_LinfAPGD):
    """APGD on the targeted DLR loss over the top `targets` classes (AutoAttack's APGD-T)."""

    def __init__(
        self, *, steps: int = 100, restarts: int = 1, rho: float = 0.75, targets: int = 9
    ) -> None:
        super().__init__(steps=steps, restarts=restarts, rho=rho)
        if targets < 1:
            raise ValueError("targets must be at least 1")
        self.targets = targets

    def run(
        self, target: Target, x: Tensor, y: Tensor, budget: float, generator: torch.Generator
    ) -> Tensor:
        classes = len(target.classes)
        if classes < 3:
            raise ThreatError(
                f"apgd-dlr needs a model with at least 3 classes, this one has {classes}; "
                "use apgd-ce instead"
            )
        with torch.no_grad():
            ranked = target.logits(x).argsort(dim=1, descending=True)
        count = min(self.targets, classes - 1)
        # Rank 0 is the true class (x is correctly classified); targets are the runners-up.
        y_targets: list[Tensor | None] = [ranked[:, r] for r in range(1, count + 1)]
        return self._runs(target, x, y, y_targets, budget, generator)
