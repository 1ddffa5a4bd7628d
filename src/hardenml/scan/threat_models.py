"""Threat models a scan attacked with more than one threat, and the worst case over them.

DESIGN.md, Defaults: "A verdict is the worst case the scan found: for a threat model at a
budget, a sample counts as robust only if every attack that ran on it failed." So a
strong black-box result is never averaged away by a white-box attack whose gradients the
model masks (Athalye, Carlini & Wagner 2018, https://arxiv.org/abs/1802.00420; Croce &
Hein 2020, https://arxiv.org/abs/2003.01690, whose AutoAttack reports exactly this
per-sample worst case over its attacks).

What counts as the same threat model: the same space, as the threat declares it
(`Threat.threat_space`), at the same budget. For norm-ball threats the space is the norm
("linf", "l2"); every threat of a scan attacks one target in its raw input space (the
target applies any normalisation and declared preprocessing itself), so the same norm
and budget are the same ball, whether the attack uses gradients, scores or labels.
Tabular threats are grouped by their declared constraints (`tabular-<digest>`): the same
constraints at the same budget are the same feasible set. Corruptions declare no space:
a severity is a fixed degradation, not a set an attacker picks from, so each stands
alone and keeps its own accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hardenml.records import WORST_CASE_METRIC, ThreatModel, UnitKey, metric_key
from hardenml.threats import Threat


@dataclass(frozen=True)
class SharedThreatModel:
    """A threat model that two or more of the scan's threats attacked, named in config
    order. Recorded with the run, so the gate judges the grouping the scan used."""

    model: ThreatModel
    threats: tuple[str, ...]

    @property
    def units(self) -> list[UnitKey]:
        return [UnitKey(name, self.model.budget) for name in self.threats]

    @property
    def measurement_key(self) -> str:
        """`robust_accuracy_worst[linf@0.1]`: the key of its worst-case measurement."""
        return metric_key(WORST_CASE_METRIC, self.model.space, self.model.budget)

    def covers(self, threat: str, budget: float) -> bool:
        return budget == self.model.budget and threat in self.threats

    def as_dict(self) -> dict[str, Any]:
        return {
            "threat_model": str(self.model),
            "space": self.model.space,
            "budget": self.model.budget,
            "threats": list(self.threats),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SharedThreatModel:
        model = ThreatModel(str(data["space"]), float(data["budget"]))
        return cls(model, tuple(str(t) for t in data["threats"]))


def shared_threat_models(
    units: Sequence[tuple[str, float]], threats: Mapping[str, Threat]
) -> list[SharedThreatModel]:
    """The threat models more than one of `units` (threat name, budget) falls in."""
    groups: dict[ThreatModel, list[str]] = {}
    for name, budget in units:
        space = threats[name].threat_space()
        if space is not None:
            groups.setdefault(ThreatModel(space, float(budget)), []).append(name)
    return [
        SharedThreatModel(model, tuple(names)) for model, names in groups.items() if len(names) > 1
    ]


def governing(
    shared: Sequence[SharedThreatModel], threat: str, budget: float
) -> SharedThreatModel | None:
    """The shared threat model that a requirement on `threat` at `budget` is judged in;
    None where that threat was the only attack of its threat model."""
    return next((model for model in shared if model.covers(threat, budget)), None)


def worst_case(robust: Mapping[str, np.ndarray], model: SharedThreatModel) -> np.ndarray:
    """Per sample, robust under every attack of `model`: the logical AND of the attacks'
    outcomes (`robust[str(unit)]`, booleans over the same samples in the same order)."""
    return np.logical_and.reduce(
        [np.asarray(robust[str(unit)], dtype=bool) for unit in model.units]
    )
