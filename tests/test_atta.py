"""ATTA / FGSM-PGI: the carried perturbation on known answers (where it starts, that it
stays in the eps ball and the bounds, that one step per visit accumulates), the patch on a
small real CNN, and the catastrophic-overfitting watch still wired to it."""

from __future__ import annotations

import contextlib

import pytest
import torch
from tests.test_fast_at import linear_net
from tests.test_patch import mnist_small  # noqa: F401  (the module-scoped fixture)

from hardenml.config import ModelConfig
from hardenml.data import Dataset
from hardenml.patch import PatchError, PatchUnchanged, make_patch
from hardenml.patch.atta import ATTA, first_memory, step_from_memory
from hardenml.targets import TorchTarget

Small = tuple[TorchTarget, ModelConfig, Dataset]
# For label 0 the linear net's loss rises along sign(w) = (+, -, +, -).
SIGN = torch.tensor([1.0, -1.0, 1.0, -1.0])


def test_the_memory_starts_where_each_paper_starts_it() -> None:
    assert torch.equal(
        first_memory((5, 4), start="zero", size=0.1, generator=torch.Generator()),
        torch.zeros(5, 4),
    )
    drawn = first_memory(
        (500, 4), start="sign", size=0.1, generator=torch.Generator().manual_seed(0)
    )
    # FGSM-PGI's clamp(alpha * sign(U[-eps, eps]), -eps, eps): every coordinate +-alpha.
    torch.testing.assert_close(drawn.abs(), torch.full_like(drawn, 0.1))
    assert 0.4 < float((drawn > 0).float().mean()) < 0.6
    again = first_memory(
        (500, 4), start="sign", size=0.1, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(drawn, again)


def test_one_step_per_visit_accumulates_and_stays_in_the_ball_and_bounds() -> None:
    net = linear_net()
    x = torch.full((3, 4), 0.5)
    y = torch.zeros(3, dtype=torch.long)
    carried = torch.zeros_like(x)
    walk = []
    for _ in range(4):
        adv, _ = step_from_memory(net, x, y, carried, eps=0.25, step_size=0.1, bounds=(0.0, 1.0))
        carried = adv - x
        walk.append(carried[0])
    # 0.1, 0.2, then the ball's edge 0.25, where it stays: a multi-step attack spread over
    # visits, each one gradient step.
    for got, size in zip(walk, [0.1, 0.2, 0.25, 0.25], strict=True):
        torch.testing.assert_close(got, size * SIGN)
    # A memory stored at a larger budget (or outside the bounds) is clipped before the step.
    near_edge = torch.tensor([[0.95, 0.05, 0.5, 0.5]])
    stored = torch.tensor([[0.4, -0.4, -0.4, 0.4]])
    adv, logits = step_from_memory(
        net, near_edge, y[:1], stored, eps=0.2, step_size=0.1, bounds=(0.0, 1.0)
    )
    torch.testing.assert_close(adv, torch.tensor([[1.0, 0.0, 0.4, 0.6]]))
    assert float((adv - near_edge).abs().max()) <= 0.2 + 1e-6
    assert logits.requires_grad  # attached for FGSM-PGI's regulariser


def test_atta_defaults_and_refusals(mnist_small: Small) -> None:  # noqa: F811
    patch = make_patch("atta", {"eps": 0.3})
    assert isinstance(patch, ATTA)
    p = patch.params()
    assert (p["start"], p["prior"], p["recovery"]) == ("zero", 0.0, "lower_step")
    assert patch.schedule().step_size == pytest.approx(0.15)  # eps / 2
    target, config, data = mnist_small
    for bad in ({"prior": -1.0}, {"start": "noise"}):
        with pytest.raises(PatchError, match="atta"):
            make_patch("atta", {"eps": 0.1, **bad})(target, config, data)


def test_the_patch_carries_every_examples_perturbation_within_the_budget(
    mnist_small: Small,  # noqa: F811
) -> None:
    target, config, data = mnist_small
    patch = make_patch("atta", {"eps": 0.1, "epochs": 1, "lr": 2e-3, "patience": 1})
    # One epoch from a zero memory is one weak step per example and need not beat the
    # parent (the robustness test below trains longer); the memory is carried either way.
    with contextlib.suppress(PatchUnchanged):
        patch(target, config, data, seed=0)
    memory = patch.memory_  # type: ignore[attr-defined]
    assert memory.abs().max() <= 0.1 + 1e-6
    # Every fit row was visited once: its step left a nonzero perturbation.
    assert bool((memory.flatten(1).abs().amax(dim=1) > 0).all())
    assert len(memory) < len(data)  # the holdout is never attacked for training


def test_atta_raises_robust_accuracy_without_overfitting(mnist_small: Small) -> None:  # noqa: F811
    target, config, data = mnist_small
    result = make_patch("atta", {"eps": 0.2, "epochs": 3, "lr": 2e-3})(target, config, data, seed=0)
    assert result.events == [], result.history
    before, after = result.metrics["before"], result.metrics["after"]
    assert after["pgd"] > before["pgd"] + 0.2, result.history
    assert after["clean"] > 0.65


@pytest.mark.parametrize("name", ["atta", "free_at"])
def test_overfitting_watch_still_fires_when_the_step_forgets_the_memory(
    name: str,
    mnist_small: Small,  # noqa: F811
) -> None:
    # A step of 2 eps from anywhere in the ball lands on x + eps * sign(grad): the carried
    # perturbation only moves where the gradient is taken, and this is FGSM training at a
    # large budget, the setting that overfits catastrophically.
    target, config, data = mnist_small
    # Free AT (`hardenml.patch.free_at`) takes the same step inside its training pass.
    patch = make_patch(name, {"eps": 0.3, "epochs": 4, "lr": 2e-3, "step_size": 0.6})
    result = patch(target, config, data, seed=1)
    assert result.events, result.history
    event = result.events[0]
    assert event["kind"] == "catastrophic_overfitting"
    assert "FGSM step 0.6 -> 0.3" in event["action"]
