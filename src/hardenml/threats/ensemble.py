"""An AutoAttack-style ensemble under an L-infinity budget.

Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", https://arxiv.org/abs/2003.01690. Like AutoAttack's
"standard" version, it runs, cheapest first, each on the samples no earlier attack broke:

1. APGD-CE (`LinfAPGDCE`): `steps` iterations;
2. APGD-T (`LinfAPGDDLR`): `steps` iterations for each of `targets` target classes;
3. Square (`hardenml.threats.square:LinfSquare`): `square_queries` black-box queries with
   AutoAttack's `p_init = 0.8`; a gradient-free check that catches gradient masking.
   Skipped, with a logged warning, when that module is not installed.

Samples whose input gradient is useless (zero or non-finite at the input and at a point
inside the ball; `hardenml.threats._gradient.gradient_is_useless`, two gradient passes)
skip the gradient stages and go straight to Square: no signed-gradient step can move
them, and on an input-quantising model, whose gradient is zero almost everywhere, the
1,000 APGD iterations per sample would buy nothing. Without Square in the chain they
stay in the gradient stages, which then at least try their random starts.

Iteration budget per sample, at most: `steps * (1 + targets)` forward and backward passes
plus `square_queries` forward passes; with the defaults (AutoAttack's: steps=100,
targets=9, square_queries=5000) that is 1,000 gradient iterations and 5,000 queries.
A sample stops costing anything once broken. AutoAttack's FAB-T is left out: the paper
finds the later attacks seldom break a sample that APGD-CE and APGD-T left standing, and
FAB needs the gradient of every class per step; Square stays as the gradient-free check.

Arguments (keyword-only): steps (default 100), targets (default 9, capped at the
number of classes minus one; APGD-T is skipped on models with fewer than 3 classes),
square_queries (default 5000; 0 leaves Square out).
Inputs `x` have shape `(n, *input_spec.shape)` in the raw input space.
"""

from __future__ import annotations

import logging
import time
from typing import ClassVar

import torch
from torch import Tensor

from hardenml.targets import Target
from hardenml.threats._gradient import gradient_is_useless
from hardenml.threats.apgd import LinfAPGDCE, LinfAPGDDLR
from hardenml.threats.base import Norm, Threat

log = logging.getLogger(__name__)

SQUARE_MODULE = "hardenml.threats.square"


def _square(queries: int) -> Threat | None:
    try:
        from hardenml.threats.square import LinfSquare
    except ModuleNotFoundError as exc:
        # Only the Square module itself may be missing; a broken import inside it is a bug.
        if exc.name != SQUARE_MODULE:
            raise
        log.warning("%s is not installed: the ensemble runs without the Square attack", exc.name)
        return None
    return LinfSquare(queries=queries, p_init=0.8)


class AutoAttackEnsemble(Threat):
    norm: ClassVar[Norm] = "linf"
    title: ClassVar[str] = "the AutoAttack ensemble (APGD-CE, APGD-T, Square; Croce & Hein 2020)"
    effort: ClassVar[tuple[str, ...]] = ("steps", "square_queries")

    def __init__(self, *, steps: int = 100, targets: int = 9, square_queries: int = 5000) -> None:
        if steps < 1 or targets < 1:
            raise ValueError("steps and targets must be at least 1")
        if square_queries < 0:
            raise ValueError("square_queries must be non-negative")
        self.steps = steps
        self.targets = targets
        self.square_queries = square_queries

    def attacks(self, classes: int) -> list[Threat]:
        """The component attacks, in the order they run."""
        chain: list[Threat] = [LinfAPGDCE(steps=self.steps)]
        if classes >= 3:
            chain.append(LinfAPGDDLR(steps=self.steps, targets=self.targets))
        if self.square_queries:
            square = _square(self.square_queries)
            if square is not None:
                chain.append(square)
        return chain

    def run(
        self, target: Target, x: Tensor, y: Tensor, budget: float, generator: torch.Generator
    ) -> Tensor:
        adv = x.clone()
        standing = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        chain = self.attacks(len(target.classes))
        # Samples no gradient can move go to the gradient-free stage directly, when there is one.
        skip_gradients = torch.zeros_like(standing)
        if any(not attack.needs_gradients for attack in chain):
            started = time.perf_counter()
            skip_gradients = gradient_is_useless(target, x, y, budget)
            seconds = time.perf_counter() - started
            log.info(
                "gradient check: %d of %d samples have zero or non-finite gradients and go "
                "straight to the black-box stage (%.2fs)",
                int(skip_gradients.sum()),
                x.shape[0],
                seconds,
                extra={
                    "component": "GradientCheck",
                    "attacked": x.shape[0],
                    "broken": 0,
                    "seconds": seconds,
                    "skipped": int(skip_gradients.sum()),
                },
            )
        for attack in chain:
            eligible = standing & ~skip_gradients if attack.needs_gradients else standing
            idx = eligible.nonzero().flatten()
            if idx.numel() == 0:
                continue
            started = time.perf_counter()
            # Through the checked entry point, so each component's budget and bounds hold.
            result = attack(target, x[idx], y[idx], budget=budget, generator=generator)
            broken = result.success.to(x.device)
            adv[idx[broken]] = result.x_adv.to(x.device, x.dtype)[broken]
            standing[idx[broken]] = False
            seconds = time.perf_counter() - started
            log.info(
                "%s broke %d of %d samples in %.2fs",
                attack,
                int(broken.sum()),
                idx.numel(),
                seconds,
                extra={
                    "component": type(attack).__name__,
                    "attacked": idx.numel(),
                    "broken": int(broken.sum()),
                    "seconds": seconds,
                },
            )
        return adv
