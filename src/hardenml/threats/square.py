"""Square Attack: a query-efficient black-box adversarial attack via random search.

Andriushchenko, Croce, Flammarion and Hein 2020, https://arxiv.org/abs/1912.00049.
Score-based: it reads the model's scores (never gradients) and greedily accepts random
square-shaped updates that lower the margin `z_y - max_{j != y} z_j`. All still-standing
samples share one forward pass per iteration; a sample stops once it is misclassified.

`LinfSquare` (norm "linf") and `L2Square` (norm "l2"). Arguments (keyword-only):
    queries: forwards per sample the search may spend, the initial point included
        (default 1000); the threat's entry point adds one clean and one scoring forward.
    p_init: initial fraction of the features a square covers, shrunk on the paper's
        schedule (`p_selection`); default 0.3. The paper uses 0.05 (Linf) and 0.1 (L2) on
        ImageNet-sized inputs; small inputs such as 8x8 digits need larger squares.
Inputs of shape `(c, h, w)` or `(h, w)` get squares; any other shape is read as one row
`(1, 1, features)`, where a "square" is a run of adjacent features of the same area.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

from hardenml.targets import Target
from hardenml.threats.base import Access, Family, Norm, Threat

# (last step of the phase on a 10,000-step scale, divisor of p_init), from the paper's code.
_SCHEDULE = (
    (10, 1),
    (50, 2),
    (200, 4),
    (500, 8),
    (1000, 16),
    (2000, 32),
    (4000, 64),
    (6000, 128),
    (8000, 256),
)


def p_selection(p_init: float, it: int, n_iters: int) -> float:
    """The paper's piecewise-constant schedule for the square's area fraction at step `it`."""
    step = int(it / n_iters * 10000)
    for edge, divisor in _SCHEDULE:
        if step <= edge:
            return p_init / divisor
    return p_init / 512


def margin_and_fooled(target: Target, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """One query per row: the margin loss and whether the model's argmax misses `y`."""
    with torch.no_grad():
        logits = target.logits(x)
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return true - other, logits.argmax(dim=1) != y


def image_layout(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(channels, height, width) the squares are drawn on."""
    if len(shape) == 3:
        return shape[0], shape[1], shape[2]
    if len(shape) == 2:
        return 1, shape[0], shape[1]
    return 1, 1, math.prod(shape)


def random_signs(shape: tuple[int, ...], generator: torch.Generator, like: Tensor) -> Tensor:
    bits = torch.randint(0, 2, shape, generator=generator, device=generator.device)
    return (2 * bits - 1).to(like.device, like.dtype)


def random_ints(high: int, size: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """`size` integers uniform in [0, high] (inclusive)."""
    return torch.randint(0, high + 1, (size,), generator=generator, device=generator.device).to(
        device
    )


def window_size(p: float, h: int, w: int, smallest: int) -> tuple[int, int]:
    """Side lengths of a window covering about a fraction `p` of each channel."""
    area = p * h * w
    if h == 1:
        return 1, min(max(round(area), smallest), max(w - 1, 1))
    side = min(max(round(math.sqrt(area)), smallest), max(min(h, w) - 1, 1))
    return side, side


class _Square(Threat):
    needs_gradients: ClassVar[bool] = False
    family: ClassVar[Family] = "score-based"
    access: ClassVar[Access] = "scores"
    title: ClassVar[str] = "Square Attack (Andriushchenko et al. 2020)"
    effort: ClassVar[tuple[str, ...]] = ("queries",)

    def __init__(self, *, queries: int = 1000, p_init: float = 0.3) -> None:
        if queries < 1:
            raise ValueError("queries must be at least 1")
        if not 0 < p_init <= 1:
            raise ValueError("p_init must lie in (0, 1]")
        self.queries = queries
        self.p_init = p_init

    def run(
        self, target: Target, x: Tensor, y: Tensor, budget: float, generator: torch.Generator
    ) -> Tensor:
        n = x.shape[0]
        c, h, w = image_layout(tuple(x.shape[1:]))
        lo, hi = target.input_spec.bounds
        xs = x.reshape(n, c, h, w)
        best = self._init(xs, budget, generator).clamp(lo, hi)
        margin, fooled = margin_and_fooled(target, best.view_as(x), y)
        # The search holds only the standing samples, compacted when some fall, so an
        # iteration neither gathers nor scatters: one proposal, one query, one update.
        idx = (~fooled).nonzero().flatten()
        x_on, best_on, margin_on, y_on = xs[idx], best[idx], margin[idx], y[idx]
        for it in range(self.queries - 1):
            if idx.numel() == 0:
                break
            p = p_selection(self.p_init, it, self.queries)
            cand = self._propose(x_on, best_on, budget, p, (lo, hi), generator)
            new_margin, new_fooled = margin_and_fooled(target, cand.view(-1, *x.shape[1:]), y_on)
            better = (new_margin < margin_on) | new_fooled
            best_on = torch.where(better[:, None, None, None], cand, best_on)
            margin_on = torch.where(better, new_margin, margin_on)
            if bool(new_fooled.any()):
                best[idx] = best_on
                on = ~new_fooled
                idx, x_on, best_on, margin_on, y_on = (
                    idx[on],
                    x_on[on],
                    best_on[on],
                    margin_on[on],
                    y_on[on],
                )
        best[idx] = best_on
        return best.view_as(x)

    @abstractmethod
    def _init(self, x: Tensor, budget: float, generator: torch.Generator) -> Tensor:
        """The starting point for images `x` of shape `(n, c, h, w)`."""

    @abstractmethod
    def _propose(
        self,
        x: Tensor,
        best: Tensor,
        budget: float,
        p: float,
        bounds: tuple[float, float],
        generator: torch.Generator,
    ) -> Tensor:
        """One random square update of `best` per sample, covering a fraction `p`, in bounds."""


class LinfSquare(_Square):
    norm: ClassVar[Norm] = "linf"

    def _init(self, x: Tensor, budget: float, generator: torch.Generator) -> Tensor:
        # Vertical stripes: one random sign per column and channel, as in the paper.
        n, c, _, w = x.shape
        return x + budget * random_signs((n, c, 1, w), generator, x)

    def _propose(
        self,
        x: Tensor,
        best: Tensor,
        budget: float,
        p: float,
        bounds: tuple[float, float],
        generator: torch.Generator,
    ) -> Tensor:
        m, c, h, w = x.shape
        sh, sw = window_size(p, h, w, smallest=1)
        rows = torch.arange(h, device=x.device)
        cols = torch.arange(w, device=x.device)
        r0 = random_ints(h - sh, m, generator, x.device)[:, None]
        c0 = random_ints(w - sw, m, generator, x.device)[:, None]
        inside = ((rows >= r0) & (rows < r0 + sh))[:, None, :, None] & (
            (cols >= c0) & (cols < c0 + sw)
        )[:, None, None, :]
        lo, hi = bounds
        signs = random_signs((m, c, 1, 1), generator, x)
        cand = torch.where(inside, x + budget * signs, best).clamp(lo, hi)
        # The paper redraws a window's signs until they change the image, so that no query
        # is spent on a copy of the current best.
        same = (cand == best).flatten(1).all(dim=1)
        if c == 1:
            # One channel has one other sign: the redraw, done in one step for every sample.
            signs = torch.where(same[:, None, None, None], -signs, signs)
            return torch.where(inside, x + budget * signs, best).clamp(lo, hi)
        for _ in range(8):  # a few redraws almost always suffice
            if not bool(same.any()):
                break
            step = x + budget * random_signs((m, c, 1, 1), generator, x)
            cand = torch.where(same[:, None, None, None] & inside, step.clamp(lo, hi), cand)
            same = (cand == best).flatten(1).all(dim=1)
        return cand


def _bump_rectangle(a: int, b: int) -> Tensor:
    """The paper's pseudo-Gaussian bump on an a x b rectangle: nested boxes, weights 1/k^2."""
    delta = torch.zeros(a, b)
    ra, rb = a // 2, b // 2
    for k in range(max(a // 2 + 1, b // 2 + 1)):
        delta[max(ra, 0) : min(ra + 2 * k + 1, a), max(rb, 0) : min(rb + 2 * k + 1, b)] += (
            1.0 / (k + 1) ** 2
        )
        ra, rb = ra - 1, rb - 1
    return delta / delta.norm()


def bump(a: int, b: int, generator: torch.Generator) -> Tensor:
    """Two bumps of opposite sign side by side (the paper's `meta_pseudo_gaussian_pert`)."""
    if a == 1 and b == 1:
        return torch.ones(1, 1)
    # Split along the longer side; a square splits either way at random (the paper's transpose).
    if a == b:
        along_rows = bool(torch.rand(1, generator=generator, device=generator.device) > 0.5)
    else:
        along_rows = a > b
    if along_rows:
        half = a // 2
        delta = torch.cat([_bump_rectangle(half, b), -_bump_rectangle(a - half, b)], dim=0)
    else:
        half = b // 2
        delta = torch.cat([_bump_rectangle(a, half), -_bump_rectangle(a, b - half)], dim=1)
    return delta / delta.norm()


def _odd(side: int, limit: int) -> int:
    """An odd side centres the bump, as in the paper; the window must still fit."""
    return side + 1 if side % 2 == 0 and side + 1 < limit else side


def _l2(v: Tensor) -> Tensor:
    return v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


class L2Square(_Square):
    norm: ClassVar[Norm] = "l2"

    def _init(self, x: Tensor, budget: float, generator: torch.Generator) -> Tensor:
        # A grid of bumps with random signs, rescaled to the full budget.
        n, c, h, w = x.shape
        th, tw = max(h // 5, 1), max(w // 5, 1)
        delta = torch.zeros_like(x)
        for r in range(0, h - th + 1, th):
            for q in range(0, w - tw + 1, tw):
                shape = bump(th, tw, generator).to(x.device, x.dtype)
                delta[:, :, r : r + th, q : q + tw] += shape * random_signs(
                    (n, c, 1, 1), generator, x
                )
        return x + delta / _l2(delta).clamp_min(1e-12) * budget

    def _propose(
        self,
        x: Tensor,
        best: Tensor,
        budget: float,
        p: float,
        bounds: tuple[float, float],
        generator: torch.Generator,
    ) -> Tensor:
        m, c, h, w = x.shape
        sh, sw = window_size(p, h, w, smallest=3)
        sh, sw = _odd(sh, h), _odd(sw, w)
        dev = x.device
        r1, c1, r2, c2 = (
            int(random_ints(limit, 1, generator, dev)) for limit in (h - sh, w - sw) * 2
        )
        win1 = (slice(None), slice(None), slice(r1, r1 + sh), slice(c1, c1 + sw))
        win2 = (slice(None), slice(None), slice(r2, r2 + sh), slice(c2, c2 + sw))
        delta = best - x
        both = torch.zeros(1, 1, h, w, dtype=torch.bool, device=dev)
        both[win1] = True
        both[win2] = True
        norm_win1 = delta[win1].pow(2).sum(dim=(2, 3), keepdim=True).sqrt()
        norm_wins = (delta * both).pow(2).sum(dim=(2, 3), keepdim=True).sqrt()
        norm_all = _l2(delta)
        new = bump(sh, sw, generator).to(dev, x.dtype) * random_signs((m, c, 1, 1), generator, x)
        new = new + delta[win1] / (norm_win1 + 1e-12)
        room = ((budget**2 - norm_all**2).clamp_min(0.0) / c + norm_wins**2).sqrt()
        new = new / new.pow(2).sum(dim=(2, 3), keepdim=True).sqrt().clamp_min(1e-12) * room
        delta[win2] = 0.0
        delta[win1] = new
        return (x + delta / _l2(delta).clamp_min(1e-12) * budget).clamp(*bounds)
