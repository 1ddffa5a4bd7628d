"""The threat contract: `(target, x, y, budget, generator) -> AttackResult`.

`Threat.__call__` is the fixed entry point. It checks the inputs, runs the attack's
`run`, then enforces the budget and the input bounds and scores success itself, so no
attack can get those wrong. Subclasses only write `run`.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from hardenml.targets import Target
from hardenml.threats.batching import chunk_rows

log = logging.getLogger(__name__)

# "none": the threat bounds its own change (a corruption's severity, tabular constraints), so
# the base clamps its output to the input bounds but does not project it onto a norm ball.
Norm = Literal["linf", "l2", "none"]
# What kind of attacker or perturbation a threat stands for; findings, remediations and the
# evaluation-integrity checks ask the threat, never its name.
Family = Literal[
    "gradient", "score-based", "decision-based", "corruption", "tabular", "text", "prompt"
]
FAMILIES: tuple[Family, ...] = (
    "gradient",
    "score-based",
    "decision-based",
    "corruption",
    "tabular",
    "text",
    "prompt",
)
# What the threat needs of the model: input gradients, output scores, or predicted labels only.
Access = Literal["gradients", "scores", "labels"]
_NORM_WORDS = {"linf": "L-infinity", "l2": "L2", "none": ""}


class ThreatError(Exception):
    """A threat was called with inputs it cannot attack; the message says why."""


@dataclass(frozen=True)
class AttackResult:
    """What a threat found on one batch. Tensors live on the CPU.

    `success[i]` is True when `x_adv[i]` is misclassified (samples the model already
    gets wrong count as successes with `x_adv[i] == x[i]`). `min_perturbation[i]` is
    the smallest budget found to flip sample i, NaN where the threat cannot tell.
    """

    x_adv: Tensor
    success: Tensor
    clean_correct: Tensor
    queries: int
    budget: float
    norm: Norm
    min_perturbation: Tensor | None = None

    @property
    def robust_correct(self) -> Tensor:
        return self.clean_correct & ~self.success


def project(x: Tensor, x_adv: Tensor, budget: float, norm: Norm) -> Tensor:
    """Project `x_adv` onto the `norm` ball of radius `budget` around `x`."""
    if norm == "none":
        return x_adv
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-budget, budget)
    else:
        flat = delta.flatten(1)
        length = flat.norm(p=2, dim=1).clamp_min(1e-12)
        factor = (budget / length).clamp(max=1.0)
        delta = (flat * factor[:, None]).view_as(delta)
    return x + delta


def perturbation_size(x: Tensor, x_adv: Tensor, norm: Norm) -> Tensor:
    flat = (x_adv - x).flatten(1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(p=2, dim=1)


class Threat(ABC):
    """Base of every attack. Constructors take keyword-only hyperparameters and store them."""

    norm: ClassVar[Norm] = "linf"
    needs_gradients: ClassVar[bool] = True
    family: ClassVar[Family] = "gradient"
    access: ClassVar[Access] = "gradients"
    # A few words naming the attack, for findings: "PGD (Madry et al. 2018)".
    title: ClassVar[str] = ""
    # Copies of its inputs an attack holds besides the model's activations (the clean
    # batch, iterate, best so far, gradient, momentum): sizes its memory-bounded chunks.
    working_copies: ClassVar[int] = 8
    # The whole-number parameters that buy more search at the same budget (iterations,
    # restarts, queries): `hardenml redteam` draws them above the configured values. Empty:
    # the threat searches no harder with more of anything.
    effort: ClassVar[tuple[str, ...]] = ()

    def __call__(
        self,
        target: Target,
        x: Tensor,
        y: Tensor,
        *,
        budget: float,
        generator: torch.Generator,
    ) -> AttackResult:
        lo, hi = target.input_spec.bounds
        if budget < 0:
            raise ThreatError(f"budget must be non-negative, got {budget}")
        if x.shape[0] != y.shape[0]:
            raise ThreatError(f"{x.shape[0]} inputs but {y.shape[0]} labels")
        # A loose tolerance: float32 rounding of scaled data must not trip it.
        if x.numel() and (float(x.min()) < lo - 1e-5 or float(x.max()) > hi + 1e-5):
            raise ThreatError(
                f"inputs range over [{float(x.min()):.4g}, {float(x.max()):.4g}] but the model "
                f"declares bounds [{lo}, {hi}]: fix model.input.bounds or scale the data"
            )
        if self.needs_gradients:
            target.require_gradients()
        x = x.to(target.device, target.input_spec.dtype)
        y = y.to(target.device)
        if x.shape[0] == 0:
            return self._attack(target, x, y, budget, generator)
        rows = chunk_rows(target, self.working_copies)
        parts: list[AttackResult] = []
        start = 0
        while start < x.shape[0]:
            stop = min(start + rows, x.shape[0])
            state = generator.get_state()
            try:
                parts.append(self._attack(target, x[start:stop], y[start:stop], budget, generator))
            except torch.OutOfMemoryError:
                if stop - start == 1:
                    raise
                # Retry the same rows, halved, from the same random state: the result is
                # what a run with the smaller chunk from here on would give.
                rows = max(1, (stop - start) // 2)
                generator.set_state(state)
                if target.device.type == "cuda":
                    torch.cuda.empty_cache()
                log.warning("out of memory: %s retries with chunks of %d samples", self, rows)
                continue
            start = stop
        return parts[0] if len(parts) == 1 else _concat(parts)

    def _attack(
        self, target: Target, x: Tensor, y: Tensor, budget: float, generator: torch.Generator
    ) -> AttackResult:
        """One chunk: attack the correctly classified rows, then enforce and score."""
        lo, hi = target.input_spec.bounds
        queries_before = target.queries
        with torch.no_grad():
            clean_correct = target.logits(x).argmax(dim=1) == y
        x_adv = x.clone()
        todo = clean_correct.nonzero().flatten()
        min_perturbation: Tensor | None = None
        if budget > 0 and todo.numel():
            found, smallest = self.run_measured(target, x[todo], y[todo], budget, generator)
            if smallest is not None:
                min_perturbation = torch.where(clean_correct, torch.nan, 0.0).cpu()
                min_perturbation[todo.cpu()] = smallest.detach().float().cpu()
            projected = project(x[todo], found.detach(), budget, self.norm).clamp(lo, hi)
            # Float bounds promote integer inputs (a text model's code points): cast back.
            x_adv[todo] = projected.to(x.dtype)
        with torch.no_grad():
            fooled = target.logits(x_adv).argmax(dim=1) != y
        return AttackResult(
            x_adv=x_adv.cpu(),
            success=(fooled | ~clean_correct).cpu(),
            clean_correct=clean_correct.cpu(),
            queries=target.queries - queries_before,
            budget=float(budget),
            norm=self.norm,
            min_perturbation=min_perturbation,
        )

    @abstractmethod
    def run(
        self, target: Target, x: Tensor, y: Tensor, budget: float, generator: torch.Generator
    ) -> Tensor:
        """Adversarial candidates for correctly classified `x`; the base projects them."""

    def run_measured(
        self, target: Target, x: Tensor, y: Tensor, budget: float, generator: torch.Generator
    ) -> tuple[Tensor, Tensor | None]:
        """`run`, plus the smallest flipping perturbation per sample where the threat measures
        it: shape `(n,)`, NaN where none flipped; None (the default) where it does not."""
        return self.run(target, x, y, budget, generator), None

    def prepare(self, reference: Tensor) -> None:
        """Fit what the threat needs from the training rows before any attack (a tabular
        threat's per-feature scale); the default needs nothing. `reference` has shape
        `(n, *input shape)`."""
        return None

    def threat_space(self) -> str | None:
        """The space this threat's budget bounds, shared by every threat whose perturbations
        at the same budget form the same set (`hardenml.records.ThreatModel`): the norm for
        a norm ball, "linf" or "l2", measured in the target's raw input space. None where a
        budget means something of the threat's own (a corruption's severity): such a threat
        is a threat model by itself, and no other attack's result counts against it."""
        return self.norm if self.norm in ("linf", "l2") else None

    def describe(self, budget: float) -> str:
        """One sentence on who this threat stands for at `budget`, for findings and reports."""
        name = self.title or type(self).__name__
        reach = f"at most {budget:g} ({_NORM_WORDS[self.norm]}, in the raw input space)"
        if self.family == "corruption":
            return f"{name} at severity {budget:g} of 5: ordinary input degradation, no attacker"
        if self.family == "tabular":
            return (
                f"an attacker who changes each mutable feature by at most {budget:g} within "
                f"its declared bounds and types, using {name}"
            )
        who = {
            "score-based": "an attacker who sees only the model's scores",
            "decision-based": "an attacker who sees only the predicted labels",
        }.get(self.family, "an attacker who has white-box gradient access")
        return f"{who} and changes each input by {reach}, using {name}"

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.endswith("_"))
        return f"{type(self).__name__}({params})"


def uniform_like(x: Tensor, generator: torch.Generator) -> Tensor:
    """U[0, 1) noise shaped like `x`, drawn on the generator's device (seeded)."""
    noise = torch.rand(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    return noise.to(x.device)


def _concat(parts: list[AttackResult]) -> AttackResult:
    """One result from the results of consecutive chunks of a batch."""
    smallest = None
    if any(p.min_perturbation is not None for p in parts):
        # A chunk with nothing to attack measured nothing: NaN where it was correct.
        smallest = torch.cat(
            [
                p.min_perturbation
                if p.min_perturbation is not None
                else torch.where(p.clean_correct, torch.nan, 0.0)
                for p in parts
            ]
        )
    return AttackResult(
        x_adv=torch.cat([p.x_adv for p in parts]),
        success=torch.cat([p.success for p in parts]),
        clean_correct=torch.cat([p.clean_correct for p in parts]),
        queries=sum(p.queries for p in parts),
        budget=parts[0].budget,
        norm=parts[0].norm,
        min_perturbation=smallest,
    )
