"""Is the model stochastic? Two calls on the same inputs, before any attack.

Like AutoAttack's check for randomised defences (Croce and Hein 2020, "Reliable
evaluation of adversarial robustness with an ensemble of diverse parameter-free attacks",
https://arxiv.org/abs/2003.01690, which compares two forward passes), the probe sends a few
inputs twice under different seeds of the global generators: outputs that differ mean the
model draws randomness on every call, and a single call per decision and per gradient step
would overstate its robustness. A third call under the first seed tells whether that
randomness comes from the generators the scan seeds (`hardenml.targets.stochastic`), and so
whether the same config and seed will give the same numbers.

`stochastic_view` turns the probe into what the scan evaluates: the model itself when it
is deterministic, the model under its declared rule (`[model.stochastic]`) when one is
declared, and a config error naming `model.stochastic` when a stochastic model has none.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from hardenml.config import ConfigError, ConfigProblem, HardenConfig
from hardenml.stats import derive_seed
from hardenml.targets import Target
from hardenml.targets.stochastic import StochasticTarget, seeded_randomness

PROBE_INPUTS = 8
# Outputs count as changed when a probability moves by more than this between two calls:
# far above float32 rounding and GPU reduction order (about 1e-7), far below any change
# that could move a decision.
CHANGE_TOLERANCE = 1e-5


@dataclass(frozen=True)
class StochasticCheck:
    """What the scan found out about the model's randomness and how it evaluated it.

    `checked`: the probe ran (`model.stochastic.detect`). `stochastic`: two calls on the
    same `n` inputs gave probabilities up to `max_change` apart. `reproducible`: a second
    call under the same seed repeated the first, so seeded scans repeat. `rule`, `samples`
    (K) and `eot_samples` (M): the declared evaluation, None when the model was called once
    per decision and per step.
    """

    checked: bool
    stochastic: bool
    reproducible: bool
    max_change: float
    n: int
    rule: str | None
    samples: int | None
    eot_samples: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for the scan's output."""
        if self.rule is not None:
            found = (
                "not checked"
                if not self.checked
                else f"outputs changed by up to {self.max_change:.3g} between two calls"
                if self.stochastic
                else "two calls gave the same outputs: the rule costs calls for nothing"
            )
            seeded = "" if self.reproducible else "; its randomness is not seeded by the scan"
            return (
                f"stochastic model: decided by {self.rule} over K={self.samples} calls, "
                f"gradients averaged over M={self.eot_samples} draws ({found}{seeded})"
            )
        if not self.checked:
            return "model randomness: not checked (model.stochastic.detect = false)"
        return f"deterministic model: two calls on {self.n} inputs gave the same outputs"


def probe(target: Target, x: Tensor, *, seed: int) -> tuple[float, bool]:
    """(largest probability change between two calls under different seeds, whether a call
    under the first seed again repeats the first call) on the inputs `x`."""
    x = x.to(target.device)
    runs = []
    with torch.no_grad():
        for attempt in (0, 1, 0):
            with seeded_randomness(derive_seed(seed, "probe", attempt), target.device):
                runs.append(torch.softmax(target.logits(x).double(), dim=1))
    change = float((runs[0] - runs[1]).abs().max()) if len(x) else 0.0
    repeat = float((runs[0] - runs[2]).abs().max()) if len(x) else 0.0
    return change, repeat <= CHANGE_TOLERANCE


def stochastic_view(
    config: HardenConfig, target: Target, x: Tensor, *, seed: int
) -> tuple[Target, StochasticCheck]:
    """The target the scan evaluates and what the probe on the first inputs of `x` found.

    Raises `ConfigError` (at `model.stochastic`) for a stochastic model without a rule.
    """
    declared = config.model.stochastic
    sample = x[:PROBE_INPUTS]
    change, reproducible = probe(target, sample, seed=seed) if declared.detect else (0.0, True)
    stochastic = change > CHANGE_TOLERANCE
    if stochastic and declared.rule is None:
        lines = config.key_lines
        raise ConfigError(
            config.source,
            [
                ConfigProblem(
                    "model.stochastic.rule",
                    None,
                    f"a decision rule, because outputs change between calls (probabilities "
                    f"moved by up to {change:.3g} between two calls on the same {len(sample)} "
                    "inputs) and one call per decision would overstate robustness: declare "
                    'model.stochastic (rule, K, M), e.g. [model.stochastic] rule = "mean" (or '
                    '"vote"), samples = 10 (K calls per decision), eot_samples = 20 (M draws '
                    'per gradient step); see docs/config.md, "Stochastic models"',
                    lines.get("model.stochastic.rule")
                    or lines.get("model.stochastic")
                    or lines.get("model"),
                )
            ],
        )
    check = StochasticCheck(
        checked=declared.detect,
        stochastic=stochastic,
        reproducible=reproducible,
        max_change=change,
        n=len(sample) if declared.detect else 0,
        rule=declared.rule,
        samples=declared.samples if declared.rule else None,
        eot_samples=declared.eot_samples if declared.rule else None,
    )
    if declared.rule is None:
        return target, check
    wrapped = StochasticTarget(
        target,
        rule=declared.rule,
        samples=declared.samples,
        eot_samples=declared.eot_samples,
        seed=seed,
    )
    return wrapped, check
