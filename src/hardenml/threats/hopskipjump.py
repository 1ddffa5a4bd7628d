"""HopSkipJumpAttack: a query-efficient decision-based attack.

Chen, Jordan and Wainwright 2020, https://arxiv.org/abs/1904.02144. Label-only: it
reads nothing but the model's top class (the argmax of its outputs). From a
misclassified starting point it walks along the decision boundary towards `x`:
estimate the boundary's normal from random probes, step along it with a geometric
step-size search, and bisect back to the boundary. The boundary point it returns is the
closest adversarial example it found; the threat's entry point then projects it onto
the budget ball. A sample stops once its point lies within the budget.

Arguments (keyword-only):
    norm: "l2" (default) or "linf": the distance the walk minimises and the budget's norm.
    queries: label queries per sample (default 2000); a sample stops before an iteration
        it could not afford. The entry point adds one clean and one scoring forward.
    steps: most boundary-walk iterations (default 40, the paper's).
    init_evals / max_evals: probes for the first gradient estimate, growing as
        `init_evals * sqrt(t)` up to `max_evals` (defaults 100 and 1000).
    gamma: sets the bisection tolerance `theta = gamma / d^(3/2)` (L2) or
        `gamma / d^2` (Linf), d the number of features (default 1.0, the paper's).
    init_tries: random uniform inputs tried per sample to find a first misclassified
        point (default 100); a sample with none is left unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor

from hardenml.targets import Target
from hardenml.threats.base import Access, Family, Norm, Threat, uniform_like

# Halvings of the step size tried before an iteration gives up moving a sample.
_MAX_HALVINGS = 10
# Probe rows sent per forward pass while estimating gradients, to bound memory.
_CHUNK_ELEMENTS = 1 << 22


# Marks rows of a probe batch misclassified; charges each probe to its sample's budget.
Oracle = Callable[[Tensor, Tensor], Tensor]


def _dims(v: Tensor) -> tuple[int, ...]:
    return (-1,) + (1,) * (v.ndim - 1)


class HopSkipJump(Threat):
    norm: ClassVar[Norm] = "l2"
    needs_gradients: ClassVar[bool] = False
    family: ClassVar[Family] = "decision-based"
    access: ClassVar[Access] = "labels"
    title: ClassVar[str] = "HopSkipJump (Chen et al. 2020)"
    effort: ClassVar[tuple[str, ...]] = ("queries", "steps", "max_evals")

    def __init__(
        self,
        *,
        norm: Norm = "l2",
        queries: int = 2000,
        steps: int = 40,
        init_evals: int = 100,
        max_evals: int = 1000,
        gamma: float = 1.0,
        init_tries: int = 100,
    ) -> None:
        if norm not in ("l2", "linf"):
            raise ValueError(f"norm must be 'l2' or 'linf', got {norm!r}")
        if min(queries, steps, init_evals, max_evals, init_tries) < 1 or gamma <= 0:
            raise ValueError("queries, steps, evals and init_tries must be >= 1, gamma > 0")
        # This threat's norm is a parameter, so it shadows the class-level default.
        self.norm = norm  # type: ignore[misc]
        self.queries = queries
        self.steps = steps
        self.init_evals = init_evals
        self.max_evals = max_evals
        self.gamma = gamma
        self.init_tries = init_tries

    def _distance(self, x: Tensor, z: Tensor) -> Tensor:
        flat = (z - x).flatten(1)
        return flat.abs().amax(dim=1) if self.norm == "linf" else flat.norm(dim=1)

    def run(
        self, target: Target, x: Tensor, y: Tensor, budget: float, generator: torch.Generator
    ) -> Tensor:
        lo, hi = target.input_spec.bounds
        n, d = x.shape[0], x[0].numel()
        theta = self.gamma / (d**1.5 if self.norm == "l2" else d**2)
        spent = torch.zeros(n, dtype=torch.long, device=x.device)

        def wrong(z: Tensor, rows: Tensor) -> Tensor:
            spent.index_add_(0, rows, torch.ones_like(rows))
            with torch.no_grad():
                return target.logits(z).argmax(dim=1) != y[rows]

        adv, found = x.clone(), torch.zeros(n, dtype=torch.bool, device=x.device)
        for _ in range(min(self.init_tries, self.queries)):
            rows = (~found).nonzero().flatten()
            if rows.numel() == 0:
                break
            noise = lo + (hi - lo) * uniform_like(x[rows], generator)
            hit = wrong(noise, rows)
            adv[rows[hit]], found[rows[hit]] = noise[hit], True
        # Bisection steps that bring the blend (L2) or the clip radius (Linf) within theta.
        search = math.ceil(math.log2(1 / theta))
        rows = (found & (spent + search <= self.queries)).nonzero().flatten()
        if rows.numel():
            adv[rows] = self._bisect(x[rows], adv[rows], rows, wrong, search)
        dist = self._distance(x, adv)
        for t in range(self.steps):
            evals = min(int(self.init_evals * math.sqrt(t + 1)), self.max_evals)
            cost = evals + _MAX_HALVINGS + 1 + search
            rows = (found & (dist > budget) & (spent + cost <= self.queries)).nonzero().flatten()
            if rows.numel() == 0:
                break
            x0, a0 = x[rows], adv[rows]
            if t == 0:
                delta = torch.full((rows.numel(),), 0.1 * (hi - lo), device=x.device)
            else:
                delta = (math.sqrt(d) if self.norm == "l2" else d) * theta * dist[rows]
            grad = self._gradient(a0, rows, delta, evals, (lo, hi), wrong, generator)
            update = grad.sign() if self.norm == "linf" else grad
            step = dist[rows] / math.sqrt(t + 1)
            moved = torch.zeros(rows.numel(), dtype=torch.bool, device=x.device)
            for _ in range(_MAX_HALVINGS + 1):
                left = (~moved).nonzero().flatten()
                if left.numel() == 0:
                    break
                cand = (a0[left] + step[left].view(_dims(a0)) * update[left]).clamp(lo, hi)
                hit = wrong(cand, rows[left])
                moved[left[hit]] = True
                step[left[~hit]] /= 2
            # Samples with no adversarial step stay where they are.
            step = torch.where(moved, step, torch.zeros_like(step))
            cand = (a0 + step.view(_dims(a0)) * update).clamp(lo, hi)
            adv[rows] = self._bisect(x0, cand, rows, wrong, search)
            dist[rows] = self._distance(x0, adv[rows])
        return adv

    def _bisect(
        self,
        x: Tensor,
        adv: Tensor,
        rows: Tensor,
        wrong: Oracle,
        steps: int,
    ) -> Tensor:
        """Move each misclassified `adv` to the decision boundary on its way to `x`."""
        if self.norm == "l2":
            # Blend factor: 0 is x, 1 is adv; stop within theta of the boundary.
            high = torch.ones(x.shape[0], device=x.device)
        else:
            # Clip radius around x, in L-inf units.
            high = self._distance(x, adv)
        low = torch.zeros_like(high)
        for _ in range(steps):
            mid = (low + high) / 2
            probe = self._toward(x, adv, mid)
            hit = wrong(probe, rows)
            high = torch.where(hit, mid, high)
            low = torch.where(hit, low, mid)
        return self._toward(x, adv, high)

    def _toward(self, x: Tensor, adv: Tensor, alpha: Tensor) -> Tensor:
        a = alpha.view(_dims(x))
        if self.norm == "l2":
            return (1 - a) * x + a * adv
        return torch.max(torch.min(adv, x + a), x - a)

    def _gradient(
        self,
        a0: Tensor,
        rows: Tensor,
        delta: Tensor,
        evals: int,
        bounds: tuple[float, float],
        wrong: Oracle,
        generator: torch.Generator,
    ) -> Tensor:
        """Monte-Carlo estimate of the boundary normal at `a0` (the paper's eq. 16)."""
        m, shape = a0.shape[0], a0.shape[1:]
        chunk = max(1, _CHUNK_ELEMENTS // max(1, evals * a0[0].numel()))
        parts = []
        for start in range(0, m, chunk):
            sl = slice(start, start + chunk)
            base, dlt = a0[sl], delta[sl].view(-1, 1, *([1] * len(shape)))
            probes_shape = (base.shape[0], evals, *shape)
            if self.norm == "l2":
                u = torch.randn(probes_shape, generator=generator, device=generator.device)
            else:
                u = 2 * torch.rand(probes_shape, generator=generator, device=generator.device) - 1
            u = u.to(base.device, base.dtype)
            u = u / u.flatten(2).norm(dim=2).clamp_min(1e-12).view(*u.shape[:2], *[1] * len(shape))
            probe = (base[:, None] + dlt * u).clamp(*bounds)
            u = (probe - base[:, None]) / dlt
            hit = wrong(probe.reshape(-1, *shape), rows[sl].repeat_interleave(evals))
            sign = 2 * hit.view(-1, evals).to(u.dtype) - 1
            mean = sign.mean(dim=1, keepdim=True)
            # Subtracting the mean is the paper's variance reduction; it would zero the
            # estimate when every probe agrees, where the plain mean is used instead.
            centred = torch.where(mean.abs() == 1, sign, sign - mean)
            g = (centred.view(*centred.shape, *[1] * len(shape)) * u).mean(dim=1)
            parts.append(g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(_dims(g)))
        return torch.cat(parts)
