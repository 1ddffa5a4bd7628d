"""Per-sample outcomes of one model on the evaluation data, for paired comparisons.

Both models see the same samples in the same order, and each threat runs with the same
seed per (threat, budget, batch) from `derive_seed` for both, so the baseline and the
candidate face the same random starts: the outcomes are paired sample by sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from hardenml._progress import Progress, SilentProgress
from hardenml.config import HardenConfig
from hardenml.data import Dataset
from hardenml.records import UnitKey
from hardenml.scan.behaviour import SuiteResult, run_suites
from hardenml.scan.evaluation import attack_batch, batch_plan, clean_probabilities
from hardenml.scan.stochastic import stochastic_view
from hardenml.scan.threat_models import governing, shared_threat_models, worst_case
from hardenml.targets import Target
from hardenml.threats import Threat, check_access


@dataclass
class Outcomes:
    """`clean[i]`/`robust[key][i]`: sample i classified right (under attack); `probs`:
    (n, classes) clean probabilities. Robust keys are `threat@budget`. `behaviour`: one
    result per declared behavioural suite, in config order. `worst[key]`: for a required
    `threat@budget` whose threat model other threats attacked too, robust under all of
    them (the per-sample worst case the gate judges; `hardenml.scan.threat_models`)."""

    clean: np.ndarray
    probs: np.ndarray
    robust: dict[str, np.ndarray]
    behaviour: list[SuiteResult] = field(default_factory=list)
    worst: dict[str, np.ndarray] = field(default_factory=dict)

    def judged(self, key: str) -> np.ndarray:
        """What a requirement on `key` is judged on: the worst case over its threat model
        where there is one, else the threat's own outcomes."""
        return self.worst.get(key, self.robust[key])


def robust_key(threat: str, budget: float) -> str:
    return str(UnitKey(threat, budget))


def evaluate(
    config: HardenConfig,
    target: Target,
    data: Dataset,
    threats: dict[str, Threat],
    *,
    seed: int,
    progress: Progress | None = None,
    label: str = "",
) -> Outcomes:
    """Clean correctness and probabilities, robust correctness for every threat and
    budget that `policy.robust` names (and every other threat sharing its threat model,
    for the worst case) and every held-out threat at every budget, and every behavioural
    suite (same seed, same draws for both models).

    The threats run through the scan's own loop (`hardenml.scan.evaluation`): the same
    batches, order and generators, so a full scan of the same model measures exactly the
    robust accuracy the validator does. Outcomes come back in the data's order."""
    progress = progress or SilentProgress()
    check_access(target, threats)
    x = torch.from_numpy(data.x)
    y = torch.from_numpy(data.y)
    # Each model under the declared rule, as the scan sees it (a config error if it is
    # stochastic and none is declared).
    target, _ = stochastic_view(config, target, x, seed=seed)
    n = len(data)
    prob = clean_probabilities(target, x)
    required = list(dict.fromkeys(UnitKey(r.threat, r.budget) for r in config.policy.robust))
    # Held-out threats are checked at every budget they declare, required or not.
    held_out = [UnitKey(t.name, b) for t in config.threats if t.held_out for b in t.budgets]
    shared = shared_threat_models([(t.name, b) for t in config.threats for b in t.budgets], threats)
    governed = {unit: governing(shared, unit.threat, unit.budget) for unit in required}
    units = list(
        dict.fromkeys(
            required
            + [u for model in governed.values() if model is not None for u in model.units]
            + held_out
        )
    )
    chunk_of = {t.name: t.batch_size for t in config.threats}
    robust = {str(unit): np.zeros(n, dtype=bool) for unit in units}
    plan = batch_plan(n, seed=seed, batch_size=config.scan.batch_size)
    advance = progress.task(f"{label}{len(units)} threat/budget pairs", n)
    for b, index in enumerate(plan):
        for unit in units:
            outcome = attack_batch(
                target,
                threats[unit.threat],
                x[index],
                y[index],
                unit,
                seed=seed,
                batch=b,
                chunk=chunk_of[unit.threat],
            )
            robust[str(unit)][index] = outcome.robust
        advance(len(index))
    behaviour = run_suites(
        config,
        target,
        data.x,
        data.y,
        feature_names=data.provenance.get("feature_names"),
        seed=seed,
    )
    return Outcomes(
        clean=prob.argmax(axis=1) == data.y,
        probs=prob,
        robust=robust,
        behaviour=behaviour,
        worst={
            str(unit): worst_case(robust, model)
            for unit, model in governed.items()
            if model is not None
        },
    )
