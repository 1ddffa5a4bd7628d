"""The verdict is the worst case the scan found (DESIGN.md, Defaults): for a threat model
at a budget, a sample counts as robust only if every attack that ran on it failed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from hardenml import workflow
from hardenml.config import parse_config
from hardenml.gate.decision import decide
from hardenml.ledger import RunRecord, findings_state
from hardenml.records import ThreatModel, UnitKey
from hardenml.scan import SharedThreatModel, checks_for, shared_threat_models, worst_case
from hardenml.threats import threat_class, validate_threats
from hardenml.validate.evaluate import evaluate

CONFIG = """\
version = 1
[project]
name = "worst-case"
[model]
name = "quantised-mlp"
kind = "torchscript"
path = "model.pt"
classes = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
device = "cpu"
[model.input]
shape = [64]
[data]
source = "digits"
test_fraction = 0.25
seed = 0
max_samples = 120
[scan]
batch_size = 60
# White-box PGD without a random start: on a model with zero gradients it never moves.
[[threats]]
name = "pgd-linf"
attack = "pgd"
budgets = [0.3]
steps = 5
random_start = false
[[threats]]
name = "square-linf"
attack = "square"
budgets = [0.3]
queries = 100
[[threats]]
name = "noise"
attack = "gaussian-noise"
budgets = [1]
[policy]
min_clean_accuracy = 0.5
[[policy.robust]]
threat = "pgd-linf"
budget = 0.3
min_accuracy = 0.5
[integrity]
enabled = false
"""


class Quantised(nn.Module):
    """Input quantisation in front of the classifier: zero input gradients almost everywhere,
    so PGD reports the model robust while a score-based attack breaks it (masking)."""

    def __init__(self, inner: nn.Module, levels: int = 33) -> None:
        super().__init__()
        self.inner, self.levels = inner, levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = self.levels - 1
        return self.inner(torch.round(x * steps) / steps)


@pytest.fixture
def masked_ws(tmp_path: Path, digits_mlp: nn.Module) -> workflow.Workspace:
    torch.jit.trace(Quantised(digits_mlp), torch.rand(1, 64)).save(str(tmp_path / "model.pt"))
    (tmp_path / "hardenml.toml").write_text(CONFIG)
    return workflow.Workspace.open(tmp_path / "hardenml.toml")


@given(
    st.integers(1, 40).flatmap(
        lambda n: st.lists(st.lists(st.booleans(), min_size=n, max_size=n), min_size=2, max_size=4)
    )
)
def test_worst_case_is_the_logical_and_of_the_attacks(outcomes: list[list[bool]]) -> None:
    names = [f"attack{i}" for i in range(len(outcomes))]
    model = SharedThreatModel(ThreatModel("linf", 0.1), tuple(names))
    robust = {str(UnitKey(name, 0.1)): np.array(o) for name, o in zip(names, outcomes, strict=True)}
    expected = [all(column) for column in zip(*outcomes, strict=True)]
    assert worst_case(robust, model).tolist() == expected


def test_threats_share_a_threat_model_by_space_and_budget_never_by_name() -> None:
    """Same norm and budget: one threat model, whatever the attack's access. Another norm,
    another budget, a corruption: apart. Tabular threats group by their constraints."""
    threats = {
        "pgd": threat_class("pgd")(),
        "square": threat_class("square")(),
        "pgd-l2": threat_class("pgd-l2")(),
        "hsj-l2": threat_class("hopskipjump")(),
        "blur": threat_class("blur")(),
        "noise": threat_class("gaussian-noise")(),
        "tab": threat_class("tabular")(integer=[1]),
        "tab-box": threat_class("tabular-blackbox")(integer=[1]),
        "tab-other": threat_class("tabular-blackbox")(integer=[2]),
    }
    units = [(name, 1.0) for name in threats] + [("pgd", 0.5)]
    shared = {str(m.model): m.threats for m in shared_threat_models(units, threats)}
    tabular = next(key for key in shared if key.startswith("tabular-"))
    assert shared == {
        "linf@1": ("pgd", "square"),
        "l2@1": ("pgd-l2", "hsj-l2"),
        tabular: ("tab", "tab-box"),
    }


def test_a_masked_model_is_gated_on_what_square_found(masked_ws: workflow.Workspace) -> None:
    """PGD reports the quantising model at its clean accuracy; Square breaks every sample.
    The gate judges the PGD requirement on the per-sample worst case: 0.0, not 0.9."""
    decision = workflow.gate(masked_ws, rescan=True)
    run = decision.run
    by_key = {
        m["metric"] + f"[{m['threat']}@{m['budget']:g}]": m
        for m in run.payload["measurements"]
        if m["threat"]
    }
    pgd, square = (
        by_key["robust_accuracy[pgd-linf@0.3]"],
        by_key["robust_accuracy[square-linf@0.3]"],
    )
    worst = by_key["robust_accuracy_worst[linf@0.3]"]
    assert pgd["value"] > 0.85 and square["value"] == 0.0
    assert worst["value"] == 0.0 and worst["n"] == pgd["n"] == 120
    # The corruption is a threat model of its own: no worst case over it.
    assert [k for k in by_key if k.startswith("robust_accuracy_worst")] == [
        "robust_accuracy_worst[linf@0.3]"
    ]
    check = next(c for c in decision.checks if c.name == "robust_accuracy[pgd-linf@0.3]")
    assert check.measurement is not None and check.measurement.value == 0.0
    assert check.attacks == ("pgd-linf", "square-linf") and check.threat_model == "linf@0.3"
    assert not check.passed and not decision.passed
    reason = next(r for r in decision.reasons if r.startswith("robust_accuracy[pgd-linf@0.3]"))
    assert "worst case over pgd-linf, square-linf at linf@0.3" in reason
    assert run.payload["scan"]["threat_models"] == [
        {
            "threat_model": "linf@0.3",
            "space": "linf",
            "budget": 0.3,
            "threats": ["pgd-linf", "square-linf"],
        }
    ]
    states = findings_state(masked_ws.ledger.events()).values()
    finding = next(f for f in states if f.metric == "robust_accuracy")
    assert "worst case over pgd-linf, square-linf" in finding.title
    assert {
        e["path"].split("/")[-1] for e in finding.evidence if e["kind"] == "adversarial_examples"
    } == {"square-linf@0.3.npz"}


def test_worst_case_equals_the_and_of_the_scans_own_outcomes(masked_ws: workflow.Workspace) -> None:
    result = workflow.scan(masked_ws)
    both = result.outcomes["robust/pgd-linf@0.3"] & result.outcomes["robust/square-linf@0.3"]
    assert result.measurement("robust_accuracy_worst[linf@0.3]").value == both.mean()


def test_the_validator_judges_requirements_on_the_same_worst_case(
    masked_ws: workflow.Workspace,
) -> None:
    config = masked_ws.config
    threats = validate_threats(config)
    outcomes = evaluate(
        config, masked_ws.load_target(), masked_ws.evaluation_data(), threats, seed=0
    )
    assert set(outcomes.robust) == {"pgd-linf@0.3", "square-linf@0.3"}
    assert (
        outcomes.judged("pgd-linf@0.3").tolist()
        == (outcomes.robust["pgd-linf@0.3"] & outcomes.robust["square-linf@0.3"]).tolist()
    )


def test_a_run_recorded_before_worst_cases_is_judged_on_its_threat(tmp_path: Path) -> None:
    """Older ledgers hold no threat models: the gate falls back to the threat's own number."""
    config = parse_config(CONFIG, root=tmp_path)
    measurement = {
        "metric": "robust_accuracy",
        "threat": "pgd-linf",
        "budget": 0.3,
        "value": 0.9,
        "ci_low": 0.85,
        "ci_high": 0.94,
        "confidence": 0.95,
        "n": 120,
        "seed": 0,
    }
    payload = {"run_id": "r", "data_sha256": "d" * 64, "measurements": [measurement]}
    run = RunRecord("r", "quantised-mlp", "a" * 64, payload, 1)
    check = next(c for c in decide(config, run, {}).checks if c.threat == "pgd-linf")
    assert check.measurement is not None and check.measurement.value == 0.9 and not check.attacks
    shared = [SharedThreatModel(ThreatModel("linf", 0.3), ("pgd-linf", "square-linf"))]
    assert checks_for(config, [], threat_models=shared)[1].measurement is None
