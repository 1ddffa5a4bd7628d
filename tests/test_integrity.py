"""Evaluation integrity on the test zoo (`hardenml.integrity_zoo.TEST`): no check fires on
an honest model, every masked one is caught by the signal built to catch it, and the scan
reports each signal once per model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hardenml.config import IntegrityConfig
from hardenml.integrity_zoo import TEST, Bases, ZooModel, build, names
from hardenml.scan.integrity import (
    CHECKS,
    IntegrityResult,
    check_model,
    check_threat,
    gradient_health,
    output_variation,
)
from hardenml.threats.ensemble import AutoAttackEnsemble
from hardenml.threats.pgd import LinfPGD
from hardenml.zoo import BlockDCTQuantised, QuantisedInput, mlp

CONFIG = IntegrityConfig(blackbox_queries=300)
# Training PGD-AT takes a few seconds; the rest of the test zoo trains in about one.
SLOW = {"cnn-digits-pgdat"}
# The signal each masked model of the test zoo is built to trip (others may fire too).
EXPECTED = {
    "quantised-cnn-digits": "zero_gradients",
    "jpeg-cnn-digits": "zero_gradients",
    "scaled-logits-mlp-digits": "saturated_cross_entropy",
    "noisy-mlp-digits": "stochastic_outputs",
    "sine-warp-mlp-digits": "shattered_gradients",
    "saturated-softmax-mlp-cancer": "probability_outputs",
}


@pytest.fixture(scope="session")
def zoo() -> Bases:
    return Bases(TEST, seed=0)


def _all_checks(model: ZooModel) -> list[IntegrityResult]:
    """What the scan runs for one PGD threat: the model's checks, then the threat's."""
    pgd = LinfPGD()
    return check_model(model.target, model.x, model.y, config=CONFIG, seed=0) + check_threat(
        "pgd", pgd, model.target, model.x, model.y, model.budget, config=CONFIG, seed=0
    )


def _marked(name: str) -> object:
    return pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name


HONEST = [n for n in names(TEST) if n not in EXPECTED]


def test_the_test_zoo_has_every_kind() -> None:
    assert set(EXPECTED) <= set(names(TEST))
    assert {"logreg-digits", "mlp-cancer", "cnn-digits", "cnn-digits-pgdat"} <= set(HONEST)


@pytest.mark.parametrize("name", [_marked(n) for n in HONEST])
def test_no_check_fires_on_an_honest_model(zoo: Bases, name: str) -> None:
    model = build(name, zoo)
    results = _all_checks(model)
    assert sorted(r.check for r in results) == sorted(CHECKS)
    assert not [r for r in results if r.flagged], [r.detail for r in results if r.flagged]


@pytest.mark.parametrize("name", [_marked(n) for n in EXPECTED])
def test_each_masked_model_is_caught_by_its_signal(zoo: Bases, name: str) -> None:
    model = build(name, zoo)
    fired = {r.check: r for r in _all_checks(model) if r.flagged}
    assert EXPECTED[name] in fired, {c: r.detail for c, r in fired.items()}
    for result in fired.values():
        assert result.detail and result.advice


def test_the_saturated_mlp_is_not_shattered_although_its_ce_gradients_are_unstable(
    zoo: Bases,
) -> None:
    """Issue 10's false alarm: cross-entropy gradients of this MLP's confident samples have
    cosine < 0.5 to a neighbour's (the old rule's "shattered"), yet a step along the
    margin gradient raises the loss on every sample."""
    model = build("mlp-cancer", zoo)
    target, x, y = model.target, model.x, model.y
    lo, hi = target.input_spec.bounds
    noise = (torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 1e-3

    def ce_gradient(points: torch.Tensor) -> torch.Tensor:
        points = points.clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(target.logits(points), y, reduction="sum")
        return torch.autograd.grad(loss, points)[0]

    cosine = nn.functional.cosine_similarity(
        ce_gradient(x), ce_gradient((x + noise * (hi - lo)).clamp(lo, hi)), dim=1
    )
    assert float((cosine < 0.5).float().mean()) > 0.2
    health = gradient_health(target, x, y)
    assert (health.zero, health.saturated_cross_entropy, health.shattered) == (0.0, 0.0, 0.0)


def test_a_stochastic_model_is_detected(zoo: Bases) -> None:
    """AutoAttack's randomised-defence check: the same inputs, five calls."""
    honest, noisy = build("mlp-digits", zoo), build("noisy-mlp-digits", zoo)
    assert output_variation(honest.target, honest.x) == (0.0, 0.0)
    varied, distance = output_variation(noisy.target, noisy.x)
    assert varied == 1.0 and distance > 1e-2


def test_checks_seed_the_models_own_randomness(zoo: Bases) -> None:
    noisy = build("noisy-mlp-digits", zoo)
    first, second = _all_checks(noisy), _all_checks(noisy)
    assert [r.value for r in first] == [r.value for r in second]
    before = torch.random.get_rng_state()
    check_model(noisy.target, noisy.x, noisy.y, config=CONFIG, seed=1)
    assert torch.equal(before, torch.random.get_rng_state())


def test_too_few_steps_is_caught_not_converging(digits_target, digits) -> None:
    _, _, x_test, y_test = digits
    x, y = torch.from_numpy(x_test[:80]), torch.from_numpy(y_test[:80])
    # Two small steps travel a fifth of the way to the ball's surface.
    weak = LinfPGD(steps=2, step_size=0.01, random_start=False)
    results = {
        r.check: r
        for r in check_threat("weak", weak, digits_target, x, y, 0.1, config=CONFIG, seed=0)
    }
    assert results["not_converged"].flagged and results["not_converged"].value < 0
    assert "lowers robust accuracy" in results["not_converged"].detail


def test_an_ensemble_is_checked_with_one_stronger_stage_and_the_scans_outcome(
    zoo: Bases,
) -> None:
    """The convergence check of an ensemble strengthens its last gradient stage only (4x the
    steps, its most likely target, no extra restart), and
    the threat's own outcome comes from the scan instead of a rerun."""
    model = build("quantised-cnn-digits", zoo)
    ensemble = AutoAttackEnsemble(steps=5, targets=2, square_queries=200)
    outcome = ensemble(
        model.target, model.x, model.y, budget=model.budget, generator=torch.Generator()
    ).robust_correct
    results = {
        r.check: r
        for r in check_threat(
            "aa",
            ensemble,
            model.target,
            model.x,
            model.y,
            model.budget,
            config=CONFIG,
            seed=0,
            robust=outcome,
        )
    }
    stronger = "LinfAPGDDLR(steps=20, restarts=1, rho=0.75, targets=1)"
    assert stronger in results["not_converged"].detail
    # Square inside the ensemble broke what gradients cannot: more steps "raise" robust
    # accuracy, and the advice does not send the user to the ensemble they already use.
    assert results["not_converged"].flagged and results["not_converged"].value > 0
    assert not results["blackbox_beats_whitebox"].flagged
    assert all("autoattack" not in r.advice for r in results.values())
    # Every value comes with an interval that holds it and has width (the findings carry it).
    for r in results.values():
        assert r.ci[0] <= r.value <= r.ci[1] and r.ci[0] < r.ci[1], r


def test_scan_of_a_masked_model_reports_each_signal_once(tmp_path, digits_mlp) -> None:
    """End to end: two gradient threats on a quantising model give one finding per
    integrity signal (not one per threat), and the gate blocks."""
    from safetensors.torch import save_file

    from hardenml import workflow
    from workspace import write_workspace

    weights = tmp_path / "w.safetensors"
    masked = QuantisedInput(digits_mlp).state_dict()
    save_file({k: v.contiguous() for k, v in masked.items()}, str(weights))
    config = write_workspace(
        tmp_path / "ws", weights, min_robust=0.0, max_samples=80, integrity=True
    )
    text = config.read_text().replace(
        'factory = "hardenml.zoo:mlp"', 'factory = "test_integrity:quantised_mlp"'
    )
    second = (
        '[[threats]]\nname = "pgd-more"\nattack = "pgd"\nbudgets = [0.1]\nsteps = 15\n\n[policy]'
    )
    config.write_text(text.replace("[policy]", second, 1) + "samples = 60\n")
    decision = workflow.gate(workflow.Workspace.open(config))
    unreliable = [
        f for f in decision.blocking_findings if f.title.startswith("Evaluation unreliable")
    ]
    metrics = [f.metric for f in unreliable]
    assert "integrity:zero_gradients" in metrics and not decision.passed
    assert len(metrics) == len(set(metrics))
    assert all(f.threat is None and f.budget is None for f in unreliable)
    (gap,) = [f for f in unreliable if f.metric == "integrity:blackbox_beats_whitebox"]
    assert "for pgd-linf, pgd-more" in gap.title
    (zero,) = [f for f in unreliable if f.metric == "integrity:zero_gradients"]
    assert 'attack = "square"' in zero.remediation


def quantised_mlp(in_features: int, classes: int, hidden: int) -> nn.Module:
    """Factory for the end-to-end test: the digits MLP behind input quantisation."""
    return QuantisedInput(mlp(in_features, classes, hidden))


def test_the_jpeg_like_defence_is_an_orthonormal_block_transform() -> None:
    """With a step far below the values' resolution, rounding changes nothing: the block
    DCT and its inverse reproduce the image (padded sizes included)."""
    images = torch.rand(3, 2, 10, 13)
    seen = BlockDCTQuantised(nn.Identity(), step=1e-6)(images)
    assert seen.shape == images.shape
    assert torch.allclose(seen, images, atol=1e-5)
    coarse = BlockDCTQuantised(nn.Identity(), step=0.5)(images)
    assert not torch.allclose(coarse, images, atol=1e-2)
