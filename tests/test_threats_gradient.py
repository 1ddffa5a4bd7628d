"""White-box gradient threats: known answers on linear models, budgets, bounds, seeds."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from conftest import DIGITS_CLASSES, linear_module
from hardenml.targets import InputSpec, TorchTarget
from hardenml.threats import Threat, ThreatError, perturbation_size, threat_class
from hardenml.threats._gradient import dlr_targeted_loss
from hardenml.threats.apgd import LinfAPGDCE, LinfAPGDDLR, checkpoints
from hardenml.threats.ensemble import AutoAttackEnsemble
from hardenml.threats.fgsm import FGSM
from hardenml.threats.pgd import LinfPGD
from hardenml.threats.pgd_l2 import L2PGD

BOUNDS = (-10.0, 10.0)


def _problem(
    seed: int, classes: int
) -> tuple[TorchTarget, torch.Tensor, torch.Tensor, float, float]:
    """A linear model that only class 0 and 1 can win: logits [0, w.x+b, -5, ...].

    Returns (target, x, y, smallest L-inf flip, smallest L2 flip). Inputs sit in [-1, 1],
    far inside the bounds, so clipping never decides the outcome.
    """
    rng = np.random.default_rng(seed)
    dim = int(rng.integers(2, 24))
    w = rng.normal(size=dim).astype(np.float32)
    w[np.abs(w) < 0.1] = 0.1
    x = rng.uniform(-1, 1, size=dim).astype(np.float32)
    margin = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 3.0))
    b = margin - float(w @ x)
    if classes == 2:
        module = linear_module(w, b)
    else:
        module = nn.Linear(dim, classes)
        weight = np.zeros((classes, dim), dtype=np.float32)
        weight[1] = w
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(weight))
            module.bias.copy_(torch.tensor([0.0, b] + [-5.0] * (classes - 2)))
    target = TorchTarget(
        module,
        input_spec=InputSpec(shape=(dim,), bounds=BOUNDS),
        classes=[str(i) for i in range(classes)],
        device="cpu",
    )
    linf = abs(margin) / float(np.abs(w).sum())
    l2 = abs(margin) / float(np.linalg.norm(w))
    return target, torch.from_numpy(x)[None], torch.tensor([int(margin > 0)]), linf, l2


KNOWN_ANSWER = [
    pytest.param(FGSM(), 2, id="fgsm"),
    pytest.param(LinfPGD(), 2, id="pgd"),
    pytest.param(L2PGD(), 2, id="pgd-l2"),
    pytest.param(LinfAPGDCE(steps=10), 2, id="apgd-ce"),
    pytest.param(LinfAPGDCE(steps=10), 4, id="apgd-ce-4-classes"),
    pytest.param(LinfAPGDDLR(steps=10), 3, id="apgd-dlr-3-classes"),
    pytest.param(LinfAPGDDLR(steps=10), 5, id="apgd-dlr-5-classes"),
    pytest.param(AutoAttackEnsemble(steps=10, square_queries=0), 3, id="ensemble"),
]


@pytest.mark.parametrize(("attack", "classes"), KNOWN_ANSWER)
@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_known_answer_smallest_flip(attack: Threat, classes: int, seed: int) -> None:
    """Smallest flips of a linear model: |w.x+b| / ||w||_1 (L-inf), / ||w||_2 (L2)."""
    target, x, y, linf, l2 = _problem(seed, classes)
    smallest = linf if attack.norm == "linf" else l2
    # Inputs lie in [-1, 1] and the bounds are [-10, 10]: only then is the optimum
    # unconstrained by the bounds, which the closed form assumes.
    assume(linf * 1.05 < 9.0)
    above = attack(target, x, y, budget=1.05 * smallest, generator=torch.Generator().manual_seed(0))
    below = attack(target, x, y, budget=0.95 * smallest, generator=torch.Generator().manual_seed(0))
    assert bool(above.success[0]), f"must flip at 1.05x the smallest budget {smallest:.4g}"
    assert not bool(below.success[0]), "no perturbation below the smallest can flip it"
    size = float(perturbation_size(x, above.x_adv, attack.norm)[0])
    assert smallest * (1 - 1e-4) <= size <= 1.05 * smallest * (1 + 1e-5)


def _digits_target(module: nn.Module) -> TorchTarget:
    return TorchTarget(module, input_spec=InputSpec(shape=(64,)), classes=DIGITS_CLASSES)


ATTACKS = [
    FGSM(),
    LinfPGD(steps=4, restarts=2),
    LinfPGD(steps=4, early_stop=False),
    L2PGD(steps=4, restarts=2),
    LinfAPGDCE(steps=6, restarts=2),
    LinfAPGDDLR(steps=6, targets=3),
    AutoAttackEnsemble(steps=4, targets=2, square_queries=20),
]


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    index=st.integers(0, len(ATTACKS) - 1),
    budget=st.floats(0.0, 0.6),
    seed=st.integers(0, 2**31 - 1),
)
def test_within_budget_and_bounds_and_seeded(digits_mlp, digits, index, budget, seed) -> None:
    attack = ATTACKS[index]
    if attack.norm == "l2":
        budget *= 4  # L2 balls need a larger radius to matter on 64 features
    _, _, x_test, y_test = digits
    x, y = torch.from_numpy(x_test[:24]), torch.from_numpy(y_test[:24])
    runs = [
        attack(
            _digits_target(digits_mlp),
            x,
            y,
            budget=budget,
            generator=torch.Generator().manual_seed(seed),
        )
        for _ in range(2)
    ]
    first = runs[0]
    assert first.x_adv.shape == x.shape and first.success.shape == (24,)
    assert float(perturbation_size(x, first.x_adv, attack.norm).max()) <= budget * (1 + 1e-5) + 1e-6
    assert float(first.x_adv.min()) >= 0.0 and float(first.x_adv.max()) <= 1.0
    assert torch.equal(first.x_adv, runs[1].x_adv), "same seed, same adversarial examples"
    assert torch.equal(first.success, runs[1].success)


@pytest.mark.parametrize("attack", [LinfPGD(steps=5), L2PGD(steps=5), LinfAPGDCE(steps=5)])
def test_another_seed_another_start(digits_target, digits, attack: Threat) -> None:
    _, _, x_test, y_test = digits
    x, y = torch.from_numpy(x_test[:16]), torch.from_numpy(y_test[:16])
    a, b = (
        attack(digits_target, x, y, budget=0.5, generator=torch.Generator().manual_seed(s))
        for s in (1, 2)
    )
    assert not torch.equal(a.x_adv, b.x_adv)


def test_early_stop_keeps_the_first_success_and_saves_passes(digits_mlp, digits) -> None:
    _, _, x_test, y_test = digits
    x, y = torch.from_numpy(x_test[:200]), torch.from_numpy(y_test[:200])
    results = {}
    for early in (True, False):
        target = _digits_target(digits_mlp)
        attack = LinfPGD(steps=20, early_stop=early)
        results[early] = attack(
            target, x, y, budget=0.15, generator=torch.Generator().manual_seed(0)
        )
    stopped, full = results[True], results[False]
    assert stopped.queries < full.queries, "broken samples must leave the batch"
    # A stopped sample keeps its first success, which later steps may undo on a full run.
    assert int(stopped.success.sum()) >= int(full.success.sum())
    assert bool(stopped.success[full.success].all())


def test_pgd_steps_reach_the_corner_from_a_random_start() -> None:
    """Madry's default step, 2.5 * budget / steps, crosses the whole L-inf ball."""
    target, x, y, linf, _ = _problem(3, 2)
    res = LinfPGD(early_stop=False)(target, x, y, budget=0.5 * linf, generator=torch.Generator())
    delta = (res.x_adv - x)[0]
    assert torch.allclose(delta.abs(), torch.full_like(delta, 0.5 * linf), rtol=1e-4)


def test_apgd_checkpoints_follow_the_paper() -> None:
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert checkpoints(1) == [1]


def test_dlr_loss_ignores_shift_and_scale() -> None:
    gen = torch.Generator().manual_seed(0)
    for classes in (3, 10):
        z = torch.randn(32, classes, generator=gen)
        y = torch.randint(0, classes, (32,), generator=gen)
        t = (y + 1) % classes
        base = dlr_targeted_loss(z, y, t)
        assert torch.allclose(dlr_targeted_loss(3.0 * z - 7.0, y, t), base, atol=1e-4)
        assert bool((dlr_targeted_loss(z, y, y) == 0).all())


def test_dlr_needs_three_classes() -> None:
    target, x, y, linf, _ = _problem(0, 2)
    with pytest.raises(ThreatError, match="at least 3 classes"):
        LinfAPGDDLR(steps=3)(target, x, y, budget=linf, generator=torch.Generator())


def test_ensemble_is_at_least_as_strong_as_its_parts(digits_target, digits) -> None:
    _, _, x_test, y_test = digits
    x, y = torch.from_numpy(x_test[:100]), torch.from_numpy(y_test[:100])
    ensemble = AutoAttackEnsemble(steps=15, targets=3, square_queries=40)
    robust = {}
    for attack in [*ensemble.attacks(len(DIGITS_CLASSES)), ensemble]:
        res = attack(digits_target, x, y, budget=0.08, generator=torch.Generator().manual_seed(0))
        robust[repr(attack)] = float(res.robust_correct.float().mean())
    assert robust[repr(ensemble)] <= min(robust.values())
    assert robust[repr(ensemble)] < 0.9, "the budget must leave something to measure"


def test_ensemble_runs_without_square(monkeypatch, caplog) -> None:
    monkeypatch.setitem(sys.modules, "hardenml.threats.square", None)
    with caplog.at_level(logging.WARNING, logger="hardenml.threats.ensemble"):
        chain = AutoAttackEnsemble().attacks(10)
    # A module set to None in sys.modules raises ModuleNotFoundError naming it.
    assert [type(a).__name__ for a in chain] == ["LinfAPGDCE", "LinfAPGDDLR"]
    assert "without the Square attack" in caplog.text


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("fgsm", FGSM),
        ("pgd", LinfPGD),
        ("pgd-l2", L2PGD),
        ("apgd-ce", LinfAPGDCE),
        ("apgd-dlr", LinfAPGDDLR),
        ("autoattack", AutoAttackEnsemble),
    ],
)
def test_registered_by_name(name: str, cls: type[Threat]) -> None:
    assert threat_class(name) is cls


@pytest.mark.parametrize(
    "make",
    [
        lambda: LinfPGD(steps=0),
        lambda: L2PGD(step_size=-1.0),
        lambda: LinfAPGDCE(rho=1.5),
        lambda: LinfAPGDDLR(targets=0),
        lambda: AutoAttackEnsemble(square_queries=-1),
    ],
)
def test_bad_hyperparameters_are_refused(make) -> None:
    with pytest.raises(ValueError):
        make()
