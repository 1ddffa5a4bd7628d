"""Square, HopSkipJump, MinimalPerturbation and the ART adapter on real, tiny models."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier
from torch import Tensor, nn

from conftest import DIGITS_CLASSES, linear_module
from hardenml.targets import InputSpec, SklearnTarget, Target, TorchTarget
from hardenml.threats import ThreatError, ThreatParameterError, perturbation_size
from hardenml.threats.art_adapter import ARTEvasion
from hardenml.threats.hopskipjump import HopSkipJump
from hardenml.threats.minimal import MinimalPerturbation
from hardenml.threats.square import L2Square, LinfSquare, p_selection


class LabelOnly(Target):
    """Exposes nothing but the predicted class (as a one-hot score) and no gradients."""

    def __init__(self, inner: Target) -> None:
        super().__init__(
            input_spec=inner.input_spec,
            classes=inner.classes,
            has_gradients=False,
            device=inner.device,
        )
        self.inner = inner

    def _forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            pred = self.inner.logits(x).argmax(dim=1)
        return nn.functional.one_hot(pred, len(self.classes)).to(x.dtype)


class NoGradients(Target):
    """The model's scores without its gradients: a score-based black box."""

    def __init__(self, inner: Target) -> None:
        super().__init__(
            input_spec=inner.input_spec,
            classes=inner.classes,
            has_gradients=False,
            device=inner.device,
        )
        self.inner = inner

    def _forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.inner.logits(x)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _linear_problem(
    n: int, dim: int, seed: int, bounds: tuple[float, float] = (-10.0, 10.0)
) -> tuple[TorchTarget, Tensor, Tensor, np.ndarray, np.ndarray]:
    """A linear binary model, points in [-1, 1] labelled by it: (target, x, y, w, w.x+b)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=dim).astype(np.float32)
    b = 0.1
    x = rng.uniform(-1, 1, size=(n, dim)).astype(np.float32)
    z = x @ w + b
    target = TorchTarget(
        linear_module(w, b),
        input_spec=InputSpec(shape=(dim,), bounds=bounds),
        classes=["neg", "pos"],
        device="cpu",
    )
    return target, torch.from_numpy(x), torch.from_numpy((z > 0).astype(np.int64)), w, z


def test_p_selection_follows_the_papers_schedule() -> None:
    expected = {0: 1.0, 10: 1.0, 11: 1 / 2, 50: 1 / 2, 51: 1 / 4, 500: 1 / 8, 501: 1 / 16}
    expected |= {2000: 1 / 32, 4000: 1 / 64, 6000: 1 / 128, 8000: 1 / 256, 9999: 1 / 512}
    for it, fraction in expected.items():
        assert p_selection(0.8, it, 10000) == pytest.approx(0.8 * fraction), it
    # The schedule is rescaled to the query budget.
    assert p_selection(0.8, 100, 1000) == p_selection(0.8, 1000, 10000)


def test_linf_square_breaks_the_digits_mlp_within_its_query_budget(
    digits_target: TorchTarget, digits: tuple[np.ndarray, ...]
) -> None:
    _, _, x_test, y_test = digits
    n, queries = 40, 300
    x, y = torch.from_numpy(x_test[:n]), torch.from_numpy(y_test[:n])
    result = LinfSquare(queries=queries)(digits_target, x, y, budget=0.1, generator=_gen())
    clean = float(result.clean_correct.float().mean())
    robust = float(result.robust_correct.float().mean())
    assert clean > 0.7
    assert robust <= clean - 0.25, f"Square at eps 0.1: clean {clean:.2f}, robust {robust:.2f}"
    # The search spends at most `queries` per sample; the entry point adds two checking passes.
    assert digits_target.queries == result.queries <= n * (queries + 2)
    assert float((result.x_adv - x).abs().max()) <= 0.1 + 1e-6


def test_l2_square_breaks_the_digits_mlp(
    digits_target: TorchTarget, digits: tuple[np.ndarray, ...]
) -> None:
    _, _, x_test, y_test = digits
    n, queries = 40, 200
    x, y = torch.from_numpy(x_test[:n]), torch.from_numpy(y_test[:n])
    result = L2Square(queries=queries)(digits_target, x, y, budget=1.0, generator=_gen())
    clean = float(result.clean_correct.float().mean())
    assert float(result.robust_correct.float().mean()) <= clean - 0.3
    assert float(perturbation_size(x, result.x_adv, "l2").max()) <= 1.0 + 1e-5
    assert digits_target.queries == result.queries <= n * (queries + 2)


def test_square_needs_no_gradients(digits: tuple[np.ndarray, ...]) -> None:
    x_train, y_train, x_test, y_test = digits
    forest = RandomForestClassifier(n_estimators=15, random_state=0).fit(x_train, y_train)
    target = SklearnTarget(forest, input_spec=InputSpec(shape=(64,)), classes=DIGITS_CLASSES)
    assert not target.has_gradients
    x, y = torch.from_numpy(x_test[:30]), torch.from_numpy(y_test[:30])
    result = LinfSquare(queries=100)(target, x, y, budget=0.2, generator=_gen())
    clean = int(result.clean_correct.sum())
    assert int(result.robust_correct.sum()) <= clean - 5
    assert result.queries <= 30 * 102


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_hopskipjump_flips_a_linear_model_from_labels_alone(norm: str) -> None:
    inner, x, y, w, z = _linear_problem(30, 12, seed=3, bounds=(-2.0, 2.0))
    target = LabelOnly(inner)
    # The smallest flipping distance of a linear model, in the attack's norm.
    dual = np.linalg.norm(w) if norm == "l2" else np.abs(w).sum()
    smallest = np.abs(z) / dual
    budget = float(np.median(smallest))
    queries = 1500
    attack = HopSkipJump(norm=norm, queries=queries)  # type: ignore[arg-type]
    result = attack(target, x, y, budget=budget, generator=_gen())
    easy = torch.from_numpy(smallest * 1.25 < budget)
    impossible = torch.from_numpy(smallest > budget)
    assert int(easy.sum()) >= 5
    assert bool(result.success[easy].all()), "every sample well inside the budget flips"
    assert not bool(result.success[impossible].any()), "nothing beyond the budget can flip"
    assert target.queries == result.queries <= 30 * (queries + 2)
    assert float(perturbation_size(x, result.x_adv, norm).max()) <= budget * (1 + 1e-5)  # type: ignore[arg-type]


def test_hopskipjump_takes_only_known_norms() -> None:
    with pytest.raises(ValueError, match="norm"):
        HopSkipJump(norm="l1")  # type: ignore[arg-type]
    assert HopSkipJump().norm == "l2" and HopSkipJump(norm="linf").norm == "linf"


@pytest.mark.parametrize("attack", ["pgd", "square"])
def test_minimal_perturbation_matches_the_linear_closed_form(attack: str) -> None:
    target, x, y, w, z = _linear_problem(16, 8, seed=1)
    y[:2] = 1 - y[:2]  # two samples the model already gets wrong
    budget, bisections = 0.4, 8
    smallest = np.abs(z) / np.abs(w).sum()
    threat = MinimalPerturbation(bisections=bisections, attack=attack, square_queries=60)
    # Square reads scores, so it gets the same model without its gradients.
    probe = target if attack == "pgd" else NoGradients(target)
    result = threat(probe, x, y, budget=budget, generator=_gen())
    mp = result.min_perturbation
    assert mp is not None and mp.shape == (16,)
    assert torch.equal(mp[:2], torch.zeros(2))
    inside = torch.from_numpy(smallest < budget * 0.99)
    inside[:2] = False
    assert int(inside.sum()) >= 10
    tolerance = budget / 2**bisections + 1e-4
    expected = torch.from_numpy(smallest).float()
    assert torch.allclose(mp[inside], expected[inside], atol=tolerance)
    beyond = torch.from_numpy(smallest > budget)
    beyond[:2] = False
    assert int(beyond.sum()) >= 1 and bool(torch.isnan(mp[beyond]).all())
    # The returned examples are the minimal ones.
    size = perturbation_size(x, result.x_adv, "linf")
    assert torch.allclose(size[inside], mp[inside])


def test_minimal_perturbation_refuses_pgd_without_gradients() -> None:
    target, x, y, _, _ = _linear_problem(4, 3, seed=0)
    with pytest.raises(ThreatError, match="gradients"):
        MinimalPerturbation(attack="pgd")(NoGradients(target), x, y, budget=0.5, generator=_gen())


def test_art_fgsm_runs_as_a_threat(
    digits_target: TorchTarget, digits: tuple[np.ndarray, ...]
) -> None:
    _, _, x_test, y_test = digits
    x, y = torch.from_numpy(x_test[:40]), torch.from_numpy(y_test[:40])
    result = ARTEvasion()(digits_target, x, y, budget=0.1, generator=_gen())
    assert float((result.x_adv - x).abs().max()) == pytest.approx(0.1, abs=1e-5)
    assert int(result.robust_correct.sum()) < int(result.clean_correct.sum()) - 5
    assert result.queries == digits_target.queries > 80, "ART's forwards go through the target"
    again = ARTEvasion()(digits_target, x, y, budget=0.1, generator=_gen())
    assert torch.equal(result.x_adv, again.x_adv)


def test_art_black_box_attack_on_a_forest(digits: tuple[np.ndarray, ...]) -> None:
    x_train, y_train, x_test, y_test = digits
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(x_train, y_train)
    target = SklearnTarget(forest, input_spec=InputSpec(shape=(64,)), classes=DIGITS_CLASSES)
    x, y = torch.from_numpy(x_test[:6]), torch.from_numpy(y_test[:6])
    threat = ARTEvasion(
        art_attack="HopSkipJump",
        art_params={"max_iter": 3, "max_eval": 50, "init_eval": 10},
        norm="l2",
    )
    result = threat(target, x, y, budget=3.0, generator=_gen())
    assert float(perturbation_size(x, result.x_adv, "l2").max()) <= 3.0 + 1e-5
    assert result.queries > 6 * 10
    with pytest.raises(ThreatError, match="gradients"):
        ARTEvasion()(target, x, y, budget=0.1, generator=_gen())


def test_art_errors_are_clear(
    digits_target: TorchTarget, digits: tuple[np.ndarray, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, x_test, y_test = digits
    x, y = torch.from_numpy(x_test[:4]), torch.from_numpy(y_test[:4])
    with pytest.raises(ThreatParameterError, match="art_attack = 'NoSuchAttack'") as info:
        ARTEvasion(art_attack="NoSuchAttack")
    assert "ProjectedGradientDescent" in info.value.expected  # lists the real ones
    with pytest.raises(ThreatParameterError, match=r"art_params\.bogus") as info:
        ARTEvasion(art_params={"bogus": 1})
    assert "eps" in info.value.expected
    with pytest.raises(ThreatParameterError, match=r"art_params\.max_iter") as info:
        ARTEvasion(art_attack="ProjectedGradientDescent", art_params={"max_iter": "ten"})
    assert "whole number" in info.value.expected
    with pytest.raises(ThreatParameterError, match=r"art_params\.estimator"):
        ARTEvasion(art_params={"estimator": "mine"})
    # A value of the right type that ART itself refuses is a ThreatError naming the class.
    threat = ARTEvasion(art_attack="ProjectedGradientDescent", art_params={"max_iter": -1})
    with pytest.raises(ThreatError, match="ProjectedGradientDescent rejected art_params"):
        threat(digits_target, x, y, budget=0.1, generator=_gen())
    for name in [m for m in sys.modules if m == "art" or m.startswith("art.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "art", None)
    with pytest.raises(ThreatError, match=r"pip install hardenml\[art\]"):
        ARTEvasion()
