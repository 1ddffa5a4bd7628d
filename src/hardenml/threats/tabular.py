"""Adversarial examples for tabular data that respect the features' constraints.

Constrained attacks in the sense of Simonetto et al. 2022, "A Unified Framework for
Adversarial Attack and Defense in Constrained Feature Space",
https://arxiv.org/abs/2112.01156: every candidate is repaired onto the feasible set
before the model sees it, so each returned example is a valid row.

- `TabularPGD`: projected gradient descent (Madry et al. 2018,
  https://arxiv.org/abs/1706.06083) on a relaxation (integers and one-hot groups as
  real numbers), repaired after every step. Needs input gradients (torch models,
  scikit-learn linear models).
- `TabularRandomSearch`: score-based random search in the manner of Square Attack
  (https://arxiv.org/abs/1912.00049): random vertex moves of a shrinking share of the
  numeric features plus random category switches, kept when the margin does not grow.
  Works on any scikit-learn model.

Constraints (keyword-only, feature indices into the flattened row):
    integer: features that hold integers; they stay integers.
    immutable: features that never change.
    one_hot: groups of features that one-hot encode a category (exactly one is 1).
    feature_bounds: `[lo, hi]` per feature (default: the model's input bounds), met
        within the model's input bounds.
    max_switches: most categorical groups a sample may switch (default 1).
    budget_units: what one unit of `budget` is for each feature: "raw" (the input's own
        units, the default), "range" (the feature's bounds' width) or "std" (its standard
        deviation on the training data, measured by `prepare`), so one budget means the
        same for a feature in [0, 1] and one in [0, 1680].
`budget` is an L-inf bound on the numeric features (times each feature's unit):
continuous ones move at most that, integer ones at most its floor. Category switches are bounded by
`max_switches`, not by `budget`, so the threat's norm is "none": the entry point clamps
to the input bounds and does not project. Inputs must already satisfy the constraints.
Two tabular threats with the same declared constraints share a threat model at the same
budget (`threat_space`), so the gate judges them on their per-sample worst case.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from hardenml.targets import Target
from hardenml.threats.base import Access, Family, Norm, Threat, ThreatError
from hardenml.threats.square import margin_and_fooled, p_selection, random_signs


@dataclass(frozen=True)
class FeatureConstraints:
    """The feasible set of one table's rows, as masks over the flattened features."""

    lo: Tensor
    hi: Tensor
    continuous: Tensor
    integer: Tensor
    groups: tuple[Tensor, ...]
    max_switches: int
    # How far each feature may move per unit of budget (`budget_units`): ones for raw
    # units, the feature's range or its training standard deviation otherwise.
    scale: Tensor

    def radius(self, budget: float) -> Tensor:
        """The per-feature L-inf radius at `budget`, shape `(features,)`."""
        return budget * self.scale

    @property
    def numeric(self) -> Tensor:
        return self.continuous | self.integer

    def check(self, x: Tensor) -> None:
        """Raise `ThreatError` naming the first feature whose data breaks a constraint."""
        tol = 1e-5
        bad = ((x < self.lo - tol) | (x > self.hi + tol)).any(dim=0)
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            raise ThreatError(
                f"feature {i} lies outside its bounds [{float(self.lo[i])}, {float(self.hi[i])}]"
            )
        fractional = (self.integer & ((x - x.round()).abs() > tol).any(dim=0)).nonzero()
        if fractional.numel():
            raise ThreatError(f"feature {int(fractional[0])} is declared integer but is not")
        for g in self.groups:
            block = x[:, g]
            if not bool((((block == 0) | (block == 1)).all(dim=1) & (block.sum(1) == 1)).all()):
                raise ThreatError(f"features {g.tolist()} are declared one-hot but are not")

    def repair(
        self, x: Tensor, cand: Tensor, budget: float, prefer: Tensor | None = None
    ) -> Tensor:
        """The feasible row nearest in spirit to `cand`: clip, round, pick categories.

        Each group takes the category `cand` scores highest; where more than
        `max_switches` groups would switch, those with the largest score gain (and first
        the groups marked in `prefer`, shape `(n, groups)`) switch, the rest stay.
        """
        out = torch.where(self.numeric, cand, x)
        radius = self.radius(budget)
        low = torch.max(self.lo, x - radius)
        high = torch.min(self.hi, x + radius)
        out = torch.where(self.continuous, torch.min(torch.max(out, low), high), out)
        # Integer features move by whole steps: floor of the radius, in float64 so that a
        # budget of exactly k allows k steps.
        steps = torch.floor(budget * self.scale.double() + 1e-9).to(x.dtype)
        low_i = torch.max(torch.ceil(self.lo), x - steps)
        high_i = torch.min(torch.floor(self.hi), x + steps)
        out = torch.where(self.integer, torch.min(torch.max(out, low_i), high_i).round(), out)
        if not self.groups:
            return out
        old = torch.stack([x[:, g].argmax(dim=1) for g in self.groups], dim=1)
        new = torch.stack([cand[:, g].argmax(dim=1) for g in self.groups], dim=1)
        gain = torch.stack(
            [
                cand[:, g].gather(1, new[:, j, None]).squeeze(1)
                - cand[:, g].gather(1, old[:, j, None]).squeeze(1)
                for j, g in enumerate(self.groups)
            ],
            dim=1,
        )
        changed = new != old
        if prefer is not None:
            gain = gain + 2 * gain.abs().amax().clamp_min(1.0) * prefer
        order = torch.where(changed, gain, torch.full_like(gain, -math.inf))
        rank = order.argsort(dim=1, descending=True, stable=True).argsort(dim=1)
        pick = torch.where(changed & (rank < self.max_switches), new, old)
        for j, g in enumerate(self.groups):
            out[:, g] = F.one_hot(pick[:, j], len(g)).to(out.dtype)
        return out


def build_constraints(
    threat: _Tabular, target: Target, features: int, device: torch.device
) -> FeatureConstraints:
    """Check the threat's constraint arguments against the model and turn them into masks."""
    named = [*threat.integer, *threat.immutable, *(i for g in threat.one_hot for i in g)]
    out_of_range = [i for i in named if not 0 <= i < features]
    if out_of_range:
        raise ThreatError(f"feature indices {out_of_range} out of range for {features} features")
    grouped = [i for g in threat.one_hot for i in g]
    if len(set(grouped)) != len(grouped) or set(grouped) & set(threat.integer):
        raise ThreatError("one-hot groups must not overlap each other or the integer features")
    lo, hi = target.input_spec.bounds
    if threat.feature_bounds is None:
        bounds = torch.tensor([[lo, hi]] * features, dtype=torch.float64)
    else:
        bounds = torch.as_tensor(threat.feature_bounds, dtype=torch.float64)
        if bounds.shape != (features, 2) or bool((bounds[:, 0] > bounds[:, 1]).any()):
            raise ThreatError(f"feature_bounds needs one [lo, hi] pair per feature ({features})")
    bounds = bounds.clamp(lo, hi).to(device, torch.float32)
    if threat.budget_units == "raw":
        scale = torch.ones(features, device=device)
    elif threat.budget_units == "range":
        scale = bounds[:, 1] - bounds[:, 0]
    else:
        if threat.scale_ is None:
            raise ThreatError(
                "budget_units = 'std' measures the budget in each feature's training standard "
                "deviation, so the threat needs the training data: run it through `hardenml "
                "scan` (or call prepare(x_train) first)"
            )
        if threat.scale_.numel() != features:
            raise ThreatError(
                f"the training data has {threat.scale_.numel()} features, the model {features}"
            )
        scale = threat.scale_.to(device, torch.float32)
    fixed = torch.zeros(features, dtype=torch.bool, device=device)
    fixed[list(threat.immutable)] = True
    integer = torch.zeros_like(fixed)
    integer[list(threat.integer)] = True
    in_group = torch.zeros_like(fixed)
    in_group[grouped] = True
    # A group with any immutable member is frozen whole: its category cannot change.
    groups = tuple(
        torch.tensor(list(g), device=device)
        for g in threat.one_hot
        if len(g) > 1 and not bool(fixed[list(g)].any())
    )
    return FeatureConstraints(
        lo=bounds[:, 0],
        hi=bounds[:, 1],
        continuous=~(fixed | integer | in_group),
        integer=integer & ~fixed,
        groups=groups,
        max_switches=threat.max_switches,
        scale=scale,
    )


BudgetUnits = Literal["raw", "range", "std"]


class _Tabular(Threat):
    norm: ClassVar[Norm] = "none"
    family: ClassVar[Family] = "tabular"

    def __init__(
        self,
        *,
        integer: Sequence[int] = (),
        immutable: Sequence[int] = (),
        one_hot: Sequence[Sequence[int]] = (),
        feature_bounds: Sequence[Sequence[float]] | None = None,
        max_switches: int = 1,
        budget_units: BudgetUnits = "raw",
    ) -> None:
        if max_switches < 0:
            raise ValueError("max_switches must be non-negative")
        if budget_units not in ("raw", "range", "std"):
            raise ValueError(f"budget_units must be 'raw', 'range' or 'std', got {budget_units!r}")
        self.integer = integer
        self.immutable = immutable
        self.one_hot = one_hot
        self.feature_bounds = feature_bounds
        self.max_switches = max_switches
        self.budget_units = budget_units
        self.scale_: Tensor | None = None

    def prepare(self, reference: Tensor) -> None:
        """With `budget_units = "std"`, measure each feature's standard deviation on the
        training rows `reference` (shape `(n, *input shape)`); a constant feature gets a
        scale of 0 and never moves."""
        if self.budget_units == "std" and len(reference) > 1:
            self.scale_ = reference.reshape(len(reference), -1).double().std(dim=0).float()

    def describe(self, budget: float) -> str:
        unit = {"raw": "", "range": " of its range", "std": " training standard deviations"}
        return (
            f"an attacker who changes each mutable feature by at most {budget:g}"
            f"{unit[self.budget_units]} within its declared bounds and types, using {self.title}"
        )

    def threat_space(self) -> str:
        """Tabular threats with the same declared constraints bound the same set at the same
        budget, whatever their search: `tabular` and a short digest of the constraints."""
        declared = [
            sorted(int(i) for i in self.integer),
            sorted(int(i) for i in self.immutable),
            sorted(sorted(int(i) for i in group) for group in self.one_hot),
            None
            if self.feature_bounds is None
            else [[float(v) for v in pair] for pair in self.feature_bounds],
            int(self.max_switches),
        ]
        digest = hashlib.sha256(json.dumps(declared).encode()).hexdigest()[:8]
        return f"tabular-{digest}"

    def _setup(self, target: Target, x: Tensor) -> tuple[FeatureConstraints, Tensor]:
        flat = x.reshape(x.shape[0], -1)
        constraints = build_constraints(self, target, flat.shape[1], x.device)
        constraints.check(flat)
        return constraints, flat


class TabularPGD(_Tabular):
    """Constrained PGD. Extra arguments: `steps` (default 50), `step_size` (default
    `2.5 * budget / steps`; one-hot groups move `2.5 / steps` per step on the relaxation)."""

    needs_gradients: ClassVar[bool] = True
    title: ClassVar[str] = "constrained PGD on the features"
    effort: ClassVar[tuple[str, ...]] = ("steps",)

    def __init__(
        self,
        *,
        integer: Sequence[int] = (),
        immutable: Sequence[int] = (),
        one_hot: Sequence[Sequence[int]] = (),
        feature_bounds: Sequence[Sequence[float]] | None = None,
        max_switches: int = 1,
        budget_units: BudgetUnits = "raw",
        steps: int = 50,
        step_size: float | None = None,
    ) -> None:
        super().__init__(
            integer=integer,
            immutable=immutable,
            one_hot=one_hot,
            feature_bounds=feature_bounds,
            max_switches=max_switches,
            budget_units=budget_units,
        )
        if steps < 1:
            raise ValueError("steps must be at least 1")
        if step_size is not None and step_size <= 0:
            raise ValueError("step_size must be positive")
        self.steps = steps
        self.step_size = step_size

    def run(
        self, target: Target, x: Tensor, y: Tensor, budget: float, generator: torch.Generator
    ) -> Tensor:
        con, flat = self._setup(target, x)
        alpha = self.step_size if self.step_size is not None else 2.5 * budget / self.steps
        radius = con.radius(budget)
        low = torch.max(con.lo, flat - radius)
        high = torch.min(con.hi, flat + radius)
        relaxed, best = flat.clone(), flat.clone()
        done = torch.zeros(flat.shape[0], dtype=torch.bool, device=flat.device)
        for _ in range(self.steps):
            relaxed.requires_grad_(True)
            loss = F.cross_entropy(target.logits(relaxed.view_as(x)), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, relaxed)
            with torch.no_grad():
                step = torch.where(
                    con.numeric, alpha * con.scale * grad.sign(), torch.zeros_like(grad)
                )
                for g in con.groups:
                    # Scaled, not signed, so the category with the largest gradient rises
                    # fastest; centred, so the current category falls as another rises.
                    part = grad[:, g] - grad[:, g].mean(dim=1, keepdim=True)
                    scale = part.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
                    step[:, g] = 2.5 / self.steps * part / scale
                step[done] = 0.0
                relaxed = relaxed + step
                relaxed = torch.where(
                    con.numeric, torch.min(torch.max(relaxed, low), high), relaxed
                )
                for g in con.groups:
                    relaxed[:, g] = relaxed[:, g].clamp(0.0, 1.0)
                cand = con.repair(flat, relaxed, budget)
                fooled = target.logits(cand.view_as(x)).argmax(dim=1) != y
                take = ~done
                best[take] = cand[take]
                done |= fooled
            if bool(done.all()):
                break
        return best.view_as(x)


class TabularRandomSearch(_Tabular):
    """Constrained black-box random search. Extra arguments: `queries` per sample
    (default 500, the initial point included), `p_init` (default 0.3: the share of numeric
    features moved at first, shrunk on Square Attack's schedule). Half of the proposals
    also switch one random group to a random category (all of them without numeric
    features)."""

    needs_gradients: ClassVar[bool] = False
    access: ClassVar[Access] = "scores"
    title: ClassVar[str] = "a constrained random search on the features"
    effort: ClassVar[tuple[str, ...]] = ("queries",)

    def __init__(
        self,
        *,
        integer: Sequence[int] = (),
        immutable: Sequence[int] = (),
        one_hot: Sequence[Sequence[int]] = (),
        feature_bounds: Sequence[Sequence[float]] | None = None,
        max_switches: int = 1,
        budget_units: BudgetUnits = "raw",
        queries: int = 500,
        p_init: float = 0.3,
    ) -> None:
        super().__init__(
            integer=integer,
            immutable=immutable,
            one_hot=one_hot,
            feature_bounds=feature_bounds,
            max_switches=max_switches,
            budget_units=budget_units,
        )
        if queries < 1:
            raise ValueError("queries must be at least 1")
        if not 0 < p_init <= 1:
            raise ValueError("p_init must lie in (0, 1]")
        self.queries = queries
        self.p_init = p_init

    def run(
        self, target: Target, x: Tensor, y: Tensor, budget: float, generator: torch.Generator
    ) -> Tensor:
        con, flat = self._setup(target, x)
        n, d = flat.shape
        numeric = int(con.numeric.sum())
        start = flat + con.radius(budget) * random_signs((n, d), generator, flat) * con.numeric
        best = con.repair(flat, start, budget)
        margin, fooled = margin_and_fooled(target, best.view_as(x), y)
        for it in range(self.queries - 1):
            idx = (~fooled).nonzero().flatten()
            if idx.numel() == 0:
                break
            cand, prefer = self._propose(con, flat[idx], best[idx], budget, it, numeric, generator)
            cand = con.repair(flat[idx], cand, budget, prefer)
            new_margin, new_fooled = margin_and_fooled(target, cand.view(-1, *x.shape[1:]), y[idx])
            # Ties are accepted: tree ensembles are flat almost everywhere, and drifting
            # across a plateau is how the search reaches its edge.
            better = (new_margin <= margin[idx]) | new_fooled
            keep = idx[better]
            best[keep] = cand[better]
            margin[keep] = new_margin[better]
            fooled[keep] = new_fooled[better]
        return best.view_as(x)

    def _propose(
        self,
        con: FeatureConstraints,
        x: Tensor,
        best: Tensor,
        budget: float,
        it: int,
        numeric: int,
        generator: torch.Generator,
    ) -> tuple[Tensor, Tensor | None]:
        m, d = x.shape
        cand = best.clone()
        if numeric:
            k = max(1, round(p_selection(self.p_init, it, self.queries) * numeric))
            draw = torch.rand((m, d), generator=generator, device=generator.device).to(x.device)
            chosen = torch.where(con.numeric, draw, torch.full_like(draw, -1.0)).topk(k).indices
            reach = con.radius(budget)[chosen]
            moved = x.gather(1, chosen) + reach * random_signs((m, k), generator, x)
            cand.scatter_(1, chosen, moved)
        if not con.groups or con.max_switches == 0:
            return cand, None
        dev = generator.device
        switch = torch.rand(m, generator=generator, device=dev) < (0.5 if numeric else 1.0)
        group = torch.randint(0, len(con.groups), (m,), generator=generator, device=dev)
        prefer = (F.one_hot(group, len(con.groups)).bool() & switch[:, None]).to(x.device)
        for j, g in enumerate(con.groups):
            rows = prefer[:, j].nonzero().flatten()
            category = torch.randint(0, len(g), (m,), generator=generator, device=dev)
            hot = F.one_hot(category.to(x.device), len(g)).to(x.dtype)
            cand[rows[:, None], g[None, :]] = hot[rows]
        return cand, prefer
