"""LinfPGD: a known answer on linear models, budgets and bounds held, seeds reproduce."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import linear_module
from hardenml.targets import InputSpec, TorchTarget
from hardenml.threats import ThreatError
from hardenml.threats.pgd import LinfPGD


def _linear_target(w: np.ndarray, b: float) -> TorchTarget:
    return TorchTarget(
        linear_module(w, b),
        input_spec=InputSpec(shape=(len(w),), bounds=(-10, 10)),
        classes=["neg", "pos"],
        device="cpu",
    )


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), dim=st.integers(2, 12))
def test_known_answer_smallest_linf_flip(seed: int, dim: int):
    """The smallest L-inf perturbation that flips x is |w.x+b| / ||w||_1."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=dim).astype(np.float32)
    w[np.abs(w) < 0.1] = 0.1
    x = rng.uniform(-1, 1, size=dim).astype(np.float32)
    b = float(rng.uniform(-1, 1))
    margin = float(w @ x + b)
    if abs(margin) < 0.05:
        margin = 0.5
        b = margin - float(w @ x)
    target = _linear_target(w, b)
    y = torch.tensor([int(margin > 0)])
    eps_star = abs(margin) / float(np.abs(w).sum())
    attack = LinfPGD(steps=30, restarts=1)
    gen = torch.Generator().manual_seed(seed)
    above = attack(target, torch.from_numpy(x)[None], y, budget=eps_star * 1.05, generator=gen)
    below = attack(target, torch.from_numpy(x)[None], y, budget=eps_star * 0.95, generator=gen)
    assert bool(above.success[0]), "PGD must flip the sample just above the optimal budget"
    assert not bool(below.success[0]), "no perturbation below the optimum can flip it"


@settings(max_examples=15, deadline=None)
@given(budget=st.floats(0.0, 0.5), seed=st.integers(0, 1000))
def test_stays_in_budget_and_bounds(digits_mlp, digits, budget: float, seed: int):
    _, _, x_test, y_test = digits
    target = TorchTarget(digits_mlp, input_spec=InputSpec(shape=(64,)), classes=list("0123456789"))
    x, y = torch.from_numpy(x_test[:32]), torch.from_numpy(y_test[:32])
    res = LinfPGD(steps=3)(
        target, x, y, budget=budget, generator=torch.Generator().manual_seed(seed)
    )
    assert float((res.x_adv - x).abs().max()) <= budget + 1e-6
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert res.success.shape == (32,) and res.queries > 0


def test_same_seed_same_examples(digits_target, digits):
    _, _, x_test, y_test = digits
    x, y = torch.from_numpy(x_test[:64]), torch.from_numpy(y_test[:64])
    runs = [
        LinfPGD(steps=5, restarts=2)(
            digits_target, x, y, budget=0.1, generator=torch.Generator().manual_seed(7)
        )
        for _ in range(2)
    ]
    assert torch.equal(runs[0].x_adv, runs[1].x_adv)
    other = LinfPGD(steps=5, restarts=2)(
        digits_target, x, y, budget=0.1, generator=torch.Generator().manual_seed(8)
    )
    assert not torch.equal(runs[0].x_adv, other.x_adv)


def test_more_budget_never_helps_the_model(digits_target, digits):
    _, _, x_test, y_test = digits
    x, y = torch.from_numpy(x_test[:150]), torch.from_numpy(y_test[:150])
    acc = [
        float(
            LinfPGD(steps=10)(
                digits_target, x, y, budget=eps, generator=torch.Generator().manual_seed(0)
            )
            .robust_correct.float()
            .mean()
        )
        for eps in (0.0, 0.05, 0.1, 0.3)
    ]
    assert acc == sorted(acc, reverse=True)
    assert acc[0] > 0.85 and acc[-1] < 0.05


def test_inputs_outside_declared_bounds_are_refused(digits_target):
    with pytest.raises(ThreatError, match=r"model.input.bounds"):
        LinfPGD()(
            digits_target,
            torch.full((2, 64), 3.0),
            torch.tensor([0, 1]),
            budget=0.1,
            generator=torch.Generator(),
        )
