"""The single-step methods made for large budgets: N-FGSM's step and GradAlign's
regulariser on known answers, both patches on a small real CNN, their refusal of held-out
threats, and the catastrophic-overfitting watch still firing where training overfits."""

from __future__ import annotations

import pytest
import torch
from tests.test_patch import mnist_small  # noqa: F401  (the module-scoped fixture)
from torch import nn

from hardenml.config import ModelConfig
from hardenml.data import Dataset
from hardenml.patch import PatchError, TrainingAttack, make_patch
from hardenml.patch.fgsm_rs import fgsm_from_noise
from hardenml.patch.grad_align import gradient_misalignment, input_gradient
from hardenml.targets import TorchTarget
from hardenml.threats.pgd import LinfPGD

Small = tuple[TorchTarget, ModelConfig, Dataset]


def linear_net() -> nn.Module:
    """Two classes, logit of class 1 = w.x: for label 0 the loss rises along +sign(w)."""
    net = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.0] * 4, [1.0, -2.0, 0.5, -0.1]]))
    return net


def test_n_fgsm_step_starts_in_bounds_and_is_not_clipped_to_the_ball() -> None:
    net, sign = linear_net(), torch.tensor([1.0, -1.0, 1.0, -1.0])
    y = torch.zeros(2000, dtype=torch.long)
    x = torch.full((2000, 4), 0.5)
    step = {"eps": 0.1, "step_size": 0.1, "noise": 0.2, "project": False, "bounds": (0.0, 1.0)}
    adv = fgsm_from_noise(
        net, x, y, **step, generator=torch.Generator().manual_seed(0), start_in_bounds=True
    )
    delta = adv - x
    # eta ~ U[-2 eps, 2 eps] plus eps * sign(grad): within 3 eps, past eps on many rows,
    # and shifted by the step: the mean perturbation is the step itself.
    assert float(delta.abs().max()) <= 0.3 + 1e-6
    assert float((delta.abs() > 0.1 + 1e-6).float().mean()) > 0.3
    torch.testing.assert_close(delta.mean(dim=0), 0.1 * sign, atol=0.01, rtol=0)
    # On the lower bound the noise that points outside is clamped away before the step:
    # every coordinate that the step pushes up ends at least a full step above 0.
    zero = torch.zeros_like(x)
    edge = fgsm_from_noise(
        net, zero, y, **step, generator=torch.Generator().manual_seed(0), start_in_bounds=True
    )
    assert float(edge[:, [0, 2]].min()) >= 0.1 - 1e-6
    assert float(edge[:, [1, 3]].max()) <= 0.1 + 1e-6 and float(edge.min()) >= 0.0
    # Wong et al.'s start, gradient taken outside the bounds: half of those end at 0.
    outside = fgsm_from_noise(net, zero, y, **step, generator=torch.Generator().manual_seed(0))
    assert float((outside[:, [0, 2]] == 0).float().mean()) > 0.2


def test_n_fgsm_defaults_are_the_papers() -> None:
    patch = make_patch("n_fgsm", {"eps": 0.3})
    p = patch.params()
    assert (p["noise"], p["project"], p["random_start"]) == (2.0, False, True)
    assert patch.schedule().step_size == 0.3  # alpha = eps
    assert make_patch("grad_align", {"eps": 0.3}).schedule().step_size == 0.3


def test_gradient_misalignment_known_answers() -> None:
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    assert float(gradient_misalignment(a[:2], a[:2])) == pytest.approx(0.0, abs=1e-6)
    assert float(gradient_misalignment(a[:1], -a[:1])) == pytest.approx(2.0)
    assert float(gradient_misalignment(a[:1], torch.tensor([[0.0, 3.0]]))) == pytest.approx(1.0)
    # A zero gradient has no direction: its row is left out of the mean.
    b = torch.tensor([[0.0, 1.0], [1.0, 1.0], [5.0, 5.0]])
    assert float(gradient_misalignment(a, b)) == pytest.approx(0.5)
    assert float(gradient_misalignment(a[2:], b[2:])) == 0.0


def test_grad_align_regulariser_reaches_the_weights_by_double_backprop() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.rand(16, 4), torch.randint(0, 3, (16,))
    first = input_gradient(net, x, y, create_graph=False)
    second = input_gradient(net, x + 0.3 * (2 * torch.rand(16, 4) - 1), y, create_graph=True)
    assert not first.requires_grad and second.requires_grad
    gradient_misalignment(first, second).backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["n_fgsm", "grad_align"])
def test_fast_patch_raises_robust_accuracy_without_overfitting(
    name: str,
    mnist_small: Small,  # noqa: F811
) -> None:
    target, config, data = mnist_small
    result = make_patch(name, {"eps": 0.2, "epochs": 3, "lr": 2e-3})(target, config, data, seed=0)
    assert result.events == [], result.history
    before, after = result.metrics["before"], result.metrics["after"]
    assert after["pgd"] > before["pgd"] + 0.2, result.history
    # Checkpoints are kept by PGD accuracy; clean accuracy stays far above chance (1/3).
    assert after["clean"] > 0.65


@pytest.mark.parametrize("name", ["n_fgsm", "grad_align"])
def test_fast_patch_refuses_held_out_threats(name: str, mnist_small: Small) -> None:  # noqa: F811
    target, config, data = mnist_small
    held = TrainingAttack("pgd-linf", LinfPGD(steps=5), 0.1)
    with pytest.raises(PatchError, match="held-out threats"):
        make_patch(name, {"eps": 0.1, "epochs": 1})(
            target, config, data, attacks=[held], held_out=["pgd-linf"]
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "params"),
    [
        # Without noise and with a long step N-FGSM's single step is plain FGSM training.
        ("n_fgsm", {"random_start": False, "project": True, "step_size": 0.45}),
        # GradAlign without its regulariser is the same plain FGSM training.
        ("grad_align", {"align": 0.0, "step_size": 0.45}),
    ],
)
def test_overfitting_watch_still_fires_on_plain_fgsm_settings(
    name: str,
    params: dict[str, object],
    mnist_small: Small,  # noqa: F811
) -> None:
    target, config, data = mnist_small
    patch = make_patch(name, {"eps": 0.3, "epochs": 4, "lr": 2e-3, **params})
    result = patch(target, config, data, seed=1)
    assert result.events, result.history
    event = result.events[0]
    assert event["kind"] == "catastrophic_overfitting"
    assert "FGSM step 0.45 -> 0.225" in event["action"]
    assert result.metrics["after"]["pgd"] > event["pgd_accuracy"]


def test_grad_align_refuses_a_negative_lambda(mnist_small: Small) -> None:  # noqa: F811
    target, config, data = mnist_small
    with pytest.raises(PatchError, match="align"):
        make_patch("grad_align", {"eps": 0.1, "align": -1.0})(target, config, data)


@pytest.mark.parametrize(
    "adversary", ["free_at", "atta", "n_fgsm", pytest.param("pgd", marks=pytest.mark.slow)]
)
def test_l2sp_finetune_makes_its_adversarial_examples_as_configured(
    adversary: str,
    mnist_small: Small,  # noqa: F811
) -> None:
    target, config, data = mnist_small
    params = {"eps": 0.1, "epochs": 2, "lr": 3e-3, "adversary": adversary}
    patch = make_patch("l2sp_finetune", params)
    assert patch.schedule().method == ("pgd" if adversary == "pgd" else "fgsm")
    assert patch.batch_replays() == (2 if adversary == "free_at" else 1)  # type: ignore[attr-defined]
    result = patch(target, config, data, seed=0)
    assert result.metrics["adversary"] == adversary
    assert [h["method"] for h in result.history[1:]] == [patch.schedule().method] * 2


def test_retrain_defaults_to_the_fast_adversary_and_refuses_unknown_ones() -> None:
    from pydantic import ValidationError

    from hardenml.config import RetrainConfig

    assert RetrainConfig().adversary == "free_at"
    patch = make_patch("l2sp_finetune", {"eps": 0.3})
    assert (patch.params()["adversary"], patch.params()["replays"]) == ("free_at", 2)
    assert patch.schedule().step_size == pytest.approx(0.15)  # free AT's and ATTA's eps / 2
    # N-FGSM keeps its own settings inside retrain: step eps, noise 2 eps, unclipped.
    nfgsm = make_patch("l2sp_finetune", {"eps": 0.3, "adversary": "n_fgsm"})
    assert nfgsm.schedule().step_size == 0.3
    assert (nfgsm.params()["noise"], nfgsm.params()["project"]) == (2.0, False)
    with pytest.raises(ValidationError, match="adversary"):
        RetrainConfig.model_validate({"adversary": "fgsm"})
