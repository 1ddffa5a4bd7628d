"""The one attack loop: the scan and the validator run threats through it, so the same
model, data, seed and config give the same per-sample outcomes in both.

Samples are visited in a seeded random order in batches of `scan.batch_size` (the plan);
each threat at each budget runs on a batch with its own generator, seeded by the scan's
seed, the threat, the budget and the batch number, in chunks of the threat's
`batch_size`. Changing `scan.batch_size` or a threat's `batch_size` regroups the samples
and so changes which random draws each one sees: the numbers move within their sampling
noise, not by a rule (docs/scan.md says so too).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hardenml.records import UnitKey
from hardenml.stats import derive_seed
from hardenml.targets import Target
from hardenml.threats import Threat

SCORE_CHUNK = 512


def batch_plan(n: int, *, seed: int, batch_size: int, cap: int | None = None) -> list[np.ndarray]:
    """The sample indices of each batch: a seeded permutation of `range(n)` (first `cap`)."""
    order = np.random.default_rng(derive_seed(seed, "order")).permutation(n)
    order = order[: min(n, cap or n)]
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def clean_probabilities(target: Target, x: torch.Tensor) -> np.ndarray:
    """Softmax of the model's outputs on `x` (float64), scored in chunks without gradients."""
    with torch.no_grad():
        parts = [
            target.logits(x[i : i + SCORE_CHUNK].to(target.device)).cpu()
            for i in range(0, len(x), SCORE_CHUNK)
        ]
    if not parts:
        return np.zeros((0, len(target.classes)))
    return torch.softmax(torch.cat(parts).double(), 1).numpy()


@dataclass(frozen=True)
class UnitOutcome:
    """One threat at one budget on one batch, per sample: still correct under attack, the
    probabilities on the adversarial input, the smallest flipping budget (NaN where the
    threat cannot tell), and the inputs it flipped (with their originals)."""

    robust: np.ndarray
    adv_probs: np.ndarray
    margins: np.ndarray
    flipped: np.ndarray
    x_adv: np.ndarray


def attack_batch(
    target: Target,
    threat: Threat,
    x: torch.Tensor,
    y: torch.Tensor,
    unit: UnitKey,
    *,
    seed: int,
    batch: int,
    chunk: int,
) -> UnitOutcome:
    """Run `threat` at `unit.budget` on batch number `batch` of the plan, `chunk` rows at a
    time from one generator, as the scan and the validator both do."""
    generator = torch.Generator().manual_seed(derive_seed(seed, unit.threat, unit.budget, batch))
    robust, adv_probs, margins, flipped, x_adv = [], [], [], [], []
    for start in range(0, len(x), chunk):
        xs, ys = x[start : start + chunk], y[start : start + chunk]
        result = threat(target, xs, ys, budget=unit.budget, generator=generator)
        robust.append(result.robust_correct.numpy())
        margins.append(
            result.min_perturbation.numpy().astype(np.float64)
            if result.min_perturbation is not None
            else np.full(len(xs), np.nan)
        )
        adv_probs.append(clean_probabilities(target, result.x_adv))
        flipped.append((result.clean_correct & result.success).numpy())
        x_adv.append(result.x_adv.numpy())
    if not robust:
        empty = np.zeros(0, dtype=bool)
        return UnitOutcome(empty, np.zeros((0, len(target.classes))), np.zeros(0), empty, x.numpy())
    return UnitOutcome(
        robust=np.concatenate(robust),
        adv_probs=np.concatenate(adv_probs),
        margins=np.concatenate(margins),
        flipped=np.concatenate(flipped),
        x_adv=np.concatenate(x_adv),
    )
