"""The smallest L-infinity budget that flips each sample, by bisection over attack budgets.

A minimal-perturbation measurement in the spirit of DeepFool (Moosavi-Dezfooli et al.
2016, https://arxiv.org/abs/1511.04599) and FAB (Croce & Hein 2020,
https://arxiv.org/abs/1907.02044), built from a fixed-budget attack instead: run it at
the full `budget`, then bisect each flipped sample's budget between 0 and the smallest
budget known to flip it. The inner attack is `LinfPGD` (Madry et al. 2018,
https://arxiv.org/abs/1706.06083) on targets with gradients and `LinfSquare`
(https://arxiv.org/abs/1912.00049) on black boxes.

`budget` is the largest L-inf budget searched. The result's `min_perturbation[i]` is the
L-inf size of the smallest flipping example found (within `budget / 2**bisections` of
the smallest budget at which the inner attack flips the sample), 0 for samples the
model already gets wrong and NaN where the full budget did not flip it; `x_adv` holds
that example.

Arguments (keyword-only):
    bisections: halvings of the search interval (default 10: precision budget / 1024).
    attack: "auto" (PGD with gradients, Square without), "pgd" or "square".
    pgd_steps: steps of each PGD run (default 20).
    square_queries: query budget of each Square run (default 300).
Samples whose intervals share a midpoint share one inner run; the cost is at most
`bisections + 1` inner runs per sample.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from hardenml.targets import Target
from hardenml.threats.base import (
    Access,
    Family,
    Norm,
    Threat,
    ThreatError,
    perturbation_size,
    project,
)
from hardenml.threats.pgd import LinfPGD
from hardenml.threats.square import LinfSquare


class MinimalPerturbation(Threat):
    norm: ClassVar[Norm] = "linf"
    needs_gradients: ClassVar[bool] = False
    # PGD on a target with gradients, Square (scores only) otherwise: a score-based threat
    # at the least, which is what it needs.
    family: ClassVar[Family] = "score-based"
    access: ClassVar[Access] = "scores"
    title: ClassVar[str] = "a bisection over the budget (smallest flipping perturbation)"
    effort: ClassVar[tuple[str, ...]] = ("bisections", "pgd_steps", "square_queries")

    def __init__(
        self,
        *,
        bisections: int = 10,
        attack: str = "auto",
        pgd_steps: int = 20,
        square_queries: int = 300,
    ) -> None:
        if bisections < 0:
            raise ValueError("bisections must be non-negative")
        if attack not in ("auto", "pgd", "square"):
            raise ValueError(f"attack must be 'auto', 'pgd' or 'square', got {attack!r}")
        if pgd_steps < 1 or square_queries < 1:
            raise ValueError("pgd_steps and square_queries must be at least 1")
        self.bisections = bisections
        self.attack = attack
        self.pgd_steps = pgd_steps
        self.square_queries = square_queries

    def _inner(self, target: Target) -> Threat:
        use_pgd = self.attack == "pgd" or (self.attack == "auto" and target.has_gradients)
        if use_pgd:
            if not target.has_gradients:
                raise ThreatError(
                    "attack='pgd' needs a target with input gradients; use attack='square'"
                )
            return LinfPGD(steps=self.pgd_steps)
        return LinfSquare(queries=self.square_queries)

    def run(
        self, target: Target, x: Tensor, y: Tensor, budget: float, generator: torch.Generator
    ) -> Tensor:
        return self.run_measured(target, x, y, budget, generator)[0]

    def run_measured(
        self, target: Target, x: Tensor, y: Tensor, budget: float, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        inner = self._inner(target)
        lo, hi = target.input_spec.bounds

        def attack(rows: Tensor, eps: float) -> tuple[Tensor, Tensor]:
            found = inner.run(target, x[rows], y[rows], eps, generator)
            found = project(x[rows], found.detach(), eps, "linf").clamp(lo, hi)
            with torch.no_grad():
                return found, target.logits(found).argmax(dim=1) != y[rows]

        everyone = torch.arange(x.shape[0], device=x.device)
        best, flipped = attack(everyone, budget)
        low = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        high = torch.full_like(low, budget)
        for _ in range(self.bisections):
            mid = (low + high) / 2
            # Intervals are dyadic, so samples with equal midpoints compare exactly equal.
            for eps in torch.unique(mid[flipped]).tolist():
                rows = (flipped & (mid == eps)).nonzero().flatten()
                found, hit = attack(rows, eps)
                best[rows[hit]] = found[hit]
                high[rows[hit]] = eps
                low[rows[~hit]] = eps
        size = perturbation_size(x, best, "linf").to(torch.float64)
        return best, torch.where(flipped, size, torch.full_like(size, float("nan")))
