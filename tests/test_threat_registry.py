"""Contract suite over every registered threat, and third-party registration by entry point.

Each threat is built with its defaults and run on the digits MLP seen as 1x8x8 images
(the MLP flattens its input, so image corruptions and flat attacks share one target).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.plugin_support import install_plugin
from torch import nn

from hardenml.config import ThreatConfig
from hardenml.targets import InputSpec, TorchTarget
from hardenml.threats import (
    AttackResult,
    Threat,
    available_threats,
    make_threat,
    perturbation_size,
    registry,
    threat_class,
    threat_parameters,
)

N = 12
# Budget per norm: L-inf and L2 radii on [0, 1] pixels; for norm "none" a corruption
# severity (1..5), which the tabular threats read as an L-inf bound.
BUDGETS = {"linf": 0.1, "l2": 1.0, "none": 3.0}
# Loop lengths shortened wherever a threat takes them, so the suite runs in seconds; every
# other argument keeps its default. None of the contract's checks depends on these.
SHORT = {
    "steps": 5,
    "pgd_steps": 5,
    "queries": 100,
    "square_queries": 50,
    "bisections": 4,
    "restarts": 1,
    "targets": 2,
}


def _image_target(module: nn.Module) -> TorchTarget:
    return TorchTarget(
        module, input_spec=InputSpec(shape=(1, 8, 8)), classes=[str(i) for i in range(10)]
    )


@pytest.fixture(scope="module")
def batch(digits: tuple[np.ndarray, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    _, _, x_test, y_test = digits
    return torch.from_numpy(x_test[:N]).reshape(N, 1, 8, 8), torch.from_numpy(y_test[:N])


def _attack(
    threat: Threat, module: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int
) -> tuple[AttackResult, int]:
    target = _image_target(module)
    result = threat(
        target, x, y, budget=BUDGETS[threat.norm], generator=torch.Generator().manual_seed(seed)
    )
    return result, target.queries


def test_registry_lists_the_built_in_threats() -> None:
    names = set(available_threats())
    assert {"pgd", "square", "square-l2", "hopskipjump", "minimal", "art"} <= names
    assert {"blur", "jpeg", "rotate", "shift", "tabular", "tabular-blackbox"} <= names


def _short(name: str) -> Threat:
    params = {k: v for k, v in SHORT.items() if k in threat_parameters(name)}
    return threat_class(name)(**params)


@pytest.mark.parametrize("name", available_threats())
def test_builds_with_defaults(name: str) -> None:
    threat = threat_class(name)()
    assert threat.norm in BUDGETS, f"{name} declares unknown norm {threat.norm!r}"
    assert type(threat).__name__ in repr(threat)
    # The space its budget bounds, for the worst case over a threat model: a norm ball's
    # norm, else None or a name of the threat's own that no norm-ball threat shares.
    space = threat.threat_space()
    if threat.norm in ("linf", "l2"):
        assert space == threat.norm
    else:
        assert space is None or space not in ("linf", "l2")


# Prompt probes talk to chat models (tests/test_chat_probes.py holds their contract); text
# threats edit strings (their contract runs on a text model, in tests/test_text_threats.py).
TENSOR_THREATS = [
    n for n in available_threats() if threat_class(n).family not in ("prompt", "text")
]


@pytest.mark.parametrize("name", TENSOR_THREATS)
def test_threat_contract(name: str, digits_mlp: nn.Module, batch: tuple[torch.Tensor, ...]) -> None:
    x, y = batch
    threat = _short(name)
    assert threat.norm in BUDGETS, f"{name} declares unknown norm {threat.norm!r}"
    budget = BUDGETS[threat.norm]
    result, queries = _attack(threat, digits_mlp, x, y, seed=7)

    assert result.x_adv.shape == x.shape and result.x_adv.dtype == x.dtype
    assert result.success.shape == (N,) and result.success.dtype == torch.bool
    assert result.clean_correct.shape == (N,) and result.clean_correct.dtype == torch.bool
    assert result.budget == budget and result.norm == threat.norm
    assert result.queries == queries > 0, "queries must count every forward the threat made"
    assert float(result.x_adv.min()) >= 0.0 and float(result.x_adv.max()) <= 1.0
    if threat.norm != "none":
        size = perturbation_size(x, result.x_adv, threat.norm)
        assert float(size.max()) <= budget * (1 + 1e-5) + 1e-6
    wrong = ~result.clean_correct
    assert torch.equal(result.x_adv[wrong], x[wrong]), "misclassified inputs stay as they are"
    pred = _image_target(digits_mlp).predict(result.x_adv)
    assert torch.equal(result.success, (pred != y) | wrong)
    if result.min_perturbation is not None:
        mp = result.min_perturbation
        assert mp.shape == (N,)
        assert bool(torch.isnan(mp[~result.success]).all())
        assert bool((mp[result.success] <= budget + 1e-6).all())

    again, _ = _attack(_short(name), digits_mlp, x, y, seed=7)
    assert torch.equal(result.x_adv, again.x_adv), f"{name}: same seed, different examples"
    assert torch.equal(result.success, again.success) and result.queries == again.queries


PLUGIN = '''
import torch
from hardenml.threats import Threat


class FlipSign(Threat):
    """Moves every feature by the full budget against the model's input: a test plugin."""

    def __init__(self, *, scale: float = 1.0) -> None:
        self.scale = scale

    def run(self, target, x, y, budget, generator):
        return x - self.scale * budget * torch.sign(x - 0.5)
'''


@pytest.fixture
def plugin_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A third-party distribution on sys.path: its module plus a dist-info naming it."""
    install_plugin(
        tmp_path,
        monkeypatch,
        module="hardenml_test_plugin",
        source=PLUGIN,
        group="hardenml.threats",
        entry="flip-sign = hardenml_test_plugin:FlipSign",
    )
    registry._entry_points.cache_clear()
    yield
    registry._entry_points.cache_clear()


def test_third_party_threat_registers_by_entry_point(
    plugin_on_path: None, digits_target: TorchTarget, digits: tuple[np.ndarray, ...]
) -> None:
    assert "flip-sign" in available_threats()
    cls = threat_class("flip-sign")
    assert cls.__name__ == "FlipSign" and issubclass(cls, Threat)
    assert threat_parameters("flip-sign") == {"scale"}
    config = ThreatConfig(name="flip", attack="flip-sign", budgets=[0.2], scale=0.5)
    threat = make_threat(config)
    _, _, x_test, y_test = digits
    x, y = torch.from_numpy(x_test[:8]), torch.from_numpy(y_test[:8])
    result = threat(digits_target, x, y, budget=0.2, generator=torch.Generator().manual_seed(0))
    moved = (result.x_adv - x)[result.clean_correct].abs()
    assert math.isclose(float(moved.max()), 0.1, rel_tol=1e-5), "the plugin's own run was used"


def test_plugin_is_gone_once_its_path_is(digits: tuple[np.ndarray, ...]) -> None:
    registry._entry_points.cache_clear()
    assert "flip-sign" not in available_threats()
