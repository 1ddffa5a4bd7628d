"""Constrained tabular attacks: constraints hold exactly, and the attacks still bite."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from torch import Tensor, nn

from hardenml.data import load_source, minmax_fit, split
from hardenml.targets import InputSpec, SklearnTarget, TorchTarget
from hardenml.threats import AttackResult, ThreatError
from hardenml.threats.tabular import TabularPGD, TabularRandomSearch

# Synthetic table: 0-1 continuous, 2 integer in 0..5, 3-5 one-hot, 6-7 one-hot,
# 8 immutable continuous.
CONTINUOUS, INTEGER, GROUPS, IMMUTABLE = [0, 1], [2], [[3, 4, 5], [6, 7]], [8]
BOUNDS = [[0.0, 1.0], [0.0, 1.0], [0.0, 5.0], *[[0.0, 1.0]] * 6]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _table(n: int, seed: int) -> Tensor:
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 9), dtype=np.float32)
    x[:, CONTINUOUS] = rng.uniform(0, 1, size=(n, 2))
    x[:, 2] = rng.integers(0, 6, size=n)
    x[np.arange(n), 3 + rng.integers(0, 3, size=n)] = 1
    x[np.arange(n), 6 + rng.integers(0, 2, size=n)] = 1
    x[:, 8] = rng.uniform(0, 1, size=n)
    return torch.from_numpy(x)


def _linear_target(seed: int) -> TorchTarget:
    torch.manual_seed(seed)
    layer = nn.Linear(9, 3)
    with torch.no_grad():
        layer.weight.mul_(4)
    return TorchTarget(
        layer,
        input_spec=InputSpec(shape=(9,), bounds=(0.0, 5.0)),
        classes=list("abc"),
        device="cpu",
    )


def _constraints(max_switches: int) -> dict[str, Any]:
    return {
        "integer": INTEGER,
        "immutable": IMMUTABLE,
        "one_hot": GROUPS,
        "feature_bounds": BOUNDS,
        "max_switches": max_switches,
    }


def _assert_feasible(x: Tensor, result: AttackResult, budget: float, max_switches: int) -> None:
    adv, delta = result.x_adv, result.x_adv - x
    assert torch.equal(adv[:, IMMUTABLE], x[:, IMMUTABLE])
    assert float(delta[:, CONTINUOUS].abs().max()) <= budget + 1e-6
    lo, hi = torch.tensor(BOUNDS).T
    assert bool(((adv >= lo) & (adv <= hi)).all())
    ints = adv[:, INTEGER]
    assert torch.equal(ints, ints.round())
    assert float(delta[:, INTEGER].abs().max()) <= math.floor(budget)
    switched = torch.zeros(x.shape[0], dtype=torch.long)
    for group in GROUPS:
        block = adv[:, group]
        assert bool(((block == 0) | (block == 1)).all()) and bool((block.sum(1) == 1).all())
        switched += (block != x[:, group]).any(dim=1).long()
    assert int(switched.max()) <= max_switches


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    budget=st.floats(0.05, 2.5),
    max_switches=st.integers(0, 2),
    black_box=st.booleans(),
)
def test_constraints_hold_exactly(
    seed: int, budget: float, max_switches: int, black_box: bool
) -> None:
    target = _linear_target(seed)
    x = _table(10, seed)
    y = target.predict(x)
    threat: TabularPGD | TabularRandomSearch
    if black_box:
        threat = TabularRandomSearch(queries=25, **_constraints(max_switches))
    else:
        threat = TabularPGD(steps=10, **_constraints(max_switches))
    result = threat(target, x, y, budget=budget, generator=_gen(seed))
    _assert_feasible(x, result, budget, max_switches)


@pytest.mark.parametrize("black_box", [False, True])
def test_integer_and_categorical_features_are_used(black_box: bool) -> None:
    """A model that reads only the integer and categorical columns can still be fooled."""
    layer = nn.Linear(9, 2)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
        # Class 1 iff integer feature + 2 * (category 5) + (category 7) > 3.5.
        layer.weight[1, [2, 5, 7]] = torch.tensor([1.0, 2.0, 1.0])
        layer.bias[1] = -3.5
    target = TorchTarget(
        layer,
        input_spec=InputSpec(shape=(9,), bounds=(0.0, 5.0)),
        classes=["lo", "hi"],
        device="cpu",
    )
    x = _table(40, seed=4)
    y = target.predict(x)
    cls = TabularRandomSearch if black_box else TabularPGD
    threat = cls(**_constraints(max_switches=1))
    result = threat(target, x, y, budget=1.0, generator=_gen())
    _assert_feasible(x, result, 1.0, 1)
    score = x[:, 2] + 2 * x[:, 5] + x[:, 7] - 3.5
    # The most the score can move towards the other class: one integer step (inside 0..5)
    # plus the better of one switch in group 3-5 (worth 2) or in group 6-7 (worth 1).
    down = y == 1
    step = torch.where(down, x[:, 2] >= 1, x[:, 2] <= 4).float()
    switch_a = 2 * torch.where(down, x[:, 5] == 1, x[:, 5] == 0).float()
    switch_b = torch.where(down, x[:, 7] == 1, x[:, 7] == 0).float()
    reachable = step + torch.max(switch_a, switch_b) > score.abs()
    assert int(reachable.sum()) >= 10
    assert bool(result.success[reachable].all())
    assert bool((result.x_adv[:, 2] != x[:, 2]).any())
    assert bool((result.x_adv[:, GROUPS[0]] != x[:, GROUPS[0]]).any())


@pytest.fixture(scope="module")
def cancer() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    train, test = split(load_source("breast_cancer"), test_fraction=0.3, seed=0)
    lo, span = minmax_fit(train)

    def scale(a: np.ndarray) -> np.ndarray:
        return np.clip((a - lo) / span, 0.0, 1.0).astype(np.float32)

    return scale(train.x), train.y, scale(test.x), test.y


@pytest.mark.parametrize("model", ["gradient_boosting", "random_forest"])
def test_random_search_breaks_tree_ensembles_on_breast_cancer(
    model: str, cancer: tuple[np.ndarray, ...]
) -> None:
    x_train, y_train, x_test, y_test = cancer
    est = (
        GradientBoostingClassifier(n_estimators=30, random_state=0)
        if model == "gradient_boosting"
        else RandomForestClassifier(n_estimators=20, random_state=0)
    ).fit(x_train, y_train)
    target = SklearnTarget(est, input_spec=InputSpec(shape=(30,)), classes=["malignant", "benign"])
    assert not target.has_gradients
    x, y = torch.from_numpy(x_test[:50]), torch.from_numpy(y_test[:50])
    immutable = [0, 1, 2]
    threat = TabularRandomSearch(queries=150, immutable=immutable)
    result = threat(target, x, y, budget=0.15, generator=_gen())
    clean = float(result.clean_correct.float().mean())
    robust = float(result.robust_correct.float().mean())
    assert clean > 0.85 and robust <= clean - 0.3, f"clean {clean:.2f} robust {robust:.2f}"
    assert torch.equal(result.x_adv[:, immutable], x[:, immutable])
    assert float((result.x_adv - x).abs().max()) <= 0.15 + 1e-6
    assert result.queries <= 50 * (150 + 2)


def test_pgd_breaks_logistic_regression_on_breast_cancer(cancer: tuple[np.ndarray, ...]) -> None:
    x_train, y_train, x_test, y_test = cancer
    est = LogisticRegression(max_iter=1000).fit(x_train, y_train)
    target = SklearnTarget(est, input_spec=InputSpec(shape=(30,)), classes=["malignant", "benign"])
    assert target.has_gradients
    x, y = torch.from_numpy(x_test[:80]), torch.from_numpy(y_test[:80])
    result = TabularPGD(immutable=[5])(target, x, y, budget=0.1, generator=_gen())
    clean = float(result.clean_correct.float().mean())
    assert float(result.robust_correct.float().mean()) <= clean - 0.3
    assert torch.equal(result.x_adv[:, 5], x[:, 5])
    assert float((result.x_adv - x).abs().max()) <= 0.1 + 1e-6


def test_inputs_that_break_the_constraints_are_refused() -> None:
    target = _linear_target(0)
    x = _table(4, seed=0)

    def attack(threat: TabularPGD | TabularRandomSearch, data: Tensor) -> None:
        threat(target, data, target.predict(data), budget=0.5, generator=_gen())

    threat = TabularRandomSearch(queries=5, **_constraints(1))
    bad_int = x.clone()
    bad_int[:, 2] = 2.5
    with pytest.raises(ThreatError, match="feature 2 is declared integer"):
        attack(threat, bad_int)
    bad_hot = x.clone()
    bad_hot[:, 3:6] = 1.0
    with pytest.raises(ThreatError, match="one-hot"):
        attack(threat, bad_hot)
    outside = x.clone()
    outside[:, 0] = 2.0
    with pytest.raises(ThreatError, match="feature 0 lies outside"):
        attack(threat, outside)
    for params, message in [
        ({"integer": [9]}, "out of range"),
        ({"one_hot": [[3, 4], [4, 5]]}, "overlap"),
        ({"integer": [3], "one_hot": [[3, 4]]}, "overlap"),
        ({"feature_bounds": [[0, 1]] * 3}, "one \\[lo, hi\\] pair per feature"),
    ]:
        with pytest.raises(ThreatError, match=message):
            attack(TabularPGD(**params), x)  # type: ignore[arg-type]


def _two_scale_problem() -> tuple[SklearnTarget, torch.Tensor, torch.Tensor]:
    """Feature 0 in [0, 1], feature 1 in [0, 1000] (wine's proline spans 278-1680)."""
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.uniform(0, 1, 400), rng.uniform(0, 1000, 400)])
    y = (x[:, 0] + x[:, 1] / 1000 > 1).astype(np.int64)
    model = LogisticRegression(C=100.0, max_iter=2000).fit(x, y)
    target = SklearnTarget(
        model, input_spec=InputSpec(shape=(2,), bounds=(0.0, 1000.0)), classes=["a", "b"]
    )
    return target, torch.from_numpy(x).float(), torch.from_numpy(y)


def test_budget_units_range_and_std_scale_the_budget_per_feature() -> None:
    target, x, y = _two_scale_problem()
    bounds = [[0.0, 1.0], [0.0, 1000.0]]
    gen = torch.Generator().manual_seed(0)
    raw = TabularRandomSearch(feature_bounds=bounds, queries=30)
    moved_raw = (raw(target, x, y, budget=0.1, generator=gen).x_adv - x).abs().amax(dim=0)
    assert float(moved_raw[1]) <= 0.1 + 1e-4  # raw units: 0.1 of 1000 is nothing
    ranged = TabularRandomSearch(feature_bounds=bounds, queries=30, budget_units="range")
    moved = (ranged(target, x, y, budget=0.1, generator=gen).x_adv - x).abs().amax(dim=0)
    assert float(moved[0]) <= 0.1 + 1e-4 and 1.0 < float(moved[1]) <= 100.0 + 1e-2
    by_std = TabularRandomSearch(feature_bounds=bounds, queries=30, budget_units="std")
    with pytest.raises(ThreatError, match="training data"):
        by_std(target, x, y, budget=0.5, generator=gen)
    by_std.prepare(x)
    std = x.double().std(dim=0)
    moved = (by_std(target, x, y, budget=0.5, generator=gen).x_adv - x).abs().amax(dim=0)
    assert bool((moved.double() <= 0.5 * std + 1e-2).all()) and float(moved[1]) > 1.0
