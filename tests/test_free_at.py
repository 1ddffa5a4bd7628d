"""Free AT from a carried perturbation: the training pass's own backward steps the memory
(known answers on a linear net), each batch is replayed, and the patch on a small real
CNN (the catastrophic-overfitting watch is tested for it with ATTA's, tests/test_atta.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tests.test_fast_at import linear_net
from tests.test_patch import mnist_small  # noqa: F401  (the module-scoped fixture)

from hardenml.config import ModelConfig
from hardenml.data import Dataset
from hardenml.patch import PatchError, make_patch
from hardenml.patch.free_at import FreeAT, free_loss
from hardenml.targets import TorchTarget
from hardenml.train import train_classifier

Small = tuple[TorchTarget, ModelConfig, Dataset]
# For label 0 the linear net's loss rises along sign(w) = (+, -, +, -).
SIGN = torch.tensor([1.0, -1.0, 1.0, -1.0])


def test_the_training_backward_pass_steps_the_memory_and_trains_on_the_old_one() -> None:
    net = linear_net()
    x = torch.full((3, 4), 0.5)
    y = torch.zeros(3, dtype=torch.long)
    memory = torch.zeros(5, 4)
    rows = torch.tensor([0, 2, 4])
    step = {"eps": 0.25, "step_size": 0.1, "bounds": (0.0, 1.0)}
    loss = free_loss(net, x, y, memory, rows, **step)
    # The loss is on the stored perturbation (zero: the clean loss); nothing moved yet.
    torch.testing.assert_close(loss, F.cross_entropy(net(x), y))
    assert torch.equal(memory, torch.zeros(5, 4))
    loss.backward()
    # The one backward pass gave the weights their gradient and the visited rows a step.
    assert net.weight.grad is not None and float(net.weight.grad.abs().sum()) > 0
    for row in (0, 2, 4):
        torch.testing.assert_close(memory[row], 0.1 * SIGN)
    assert torch.equal(memory[[1, 3]], torch.zeros(2, 4))
    # Visits accumulate up to the ball's edge and stay there, clipped to the bounds too.
    for _ in range(3):
        free_loss(net, x, y, memory, rows, **step).backward()
    torch.testing.assert_close(memory[0], 0.25 * SIGN)
    near_edge = torch.tensor([[0.95, 0.05, 0.5, 0.5]])
    memory = torch.tensor([[0.4, -0.4, -0.4, 0.4]])  # stored at a larger budget
    free_loss(net, near_edge, y[:1], memory, torch.tensor([0]), **{**step, "eps": 0.2}).backward()
    torch.testing.assert_close(near_edge + memory, torch.tensor([[1.0, 0.0, 0.4, 0.6]]))


def test_replays_take_that_many_steps_on_each_batch() -> None:
    x = torch.rand(10, 4, generator=torch.Generator().manual_seed(0)).numpy()
    y = torch.zeros(10, dtype=torch.long).numpy()
    seen: list[list[int]] = []
    for replays in (1, 3):
        seen.clear()
        train_classifier(
            linear_net(),
            x,
            y,
            epochs=1,
            batch_size=4,
            before_batch=lambda rows: seen.append(rows.tolist()),
            replays=replays,
        )
        # Batches of 4, 4 and 2 rows, each visited `replays` times in a row.
        assert [len(r) for r in seen] == [n for n in (4, 4, 2) for _ in range(replays)]
        assert all(seen[i] == seen[i - i % replays] for i in range(len(seen)))


def test_free_at_defaults_and_refusals(mnist_small: Small) -> None:  # noqa: F811
    patch = make_patch("free_at", {"eps": 0.3})
    assert isinstance(patch, FreeAT)
    assert (patch.replays, patch.batch_replays()) == (2, 2)
    assert patch.schedule().step_size == pytest.approx(0.15)  # eps / 2, as ATTA's
    target, config, data = mnist_small
    for bad in ({"replays": 0}, {"prior": 1.0}):
        with pytest.raises(PatchError, match="free_at"):
            make_patch("free_at", {"eps": 0.1, **bad})(target, config, data)


@pytest.mark.slow
def test_free_at_raises_robust_accuracy_without_overfitting(mnist_small: Small) -> None:  # noqa: F811
    target, config, data = mnist_small
    patch = make_patch("free_at", {"eps": 0.2, "epochs": 2, "lr": 2e-3})
    result = patch(target, config, data, seed=0)
    assert result.events == [], result.history
    before, after = result.metrics["before"], result.metrics["after"]
    assert after["pgd"] > before["pgd"] + 0.2, result.history
    assert after["clean"] > 0.65
    # Two epochs of two visits per batch: every fit row was stepped, within the budget.
    memory = patch.memory_  # type: ignore[attr-defined]
    assert memory.abs().max() <= 0.2 + 1e-6
    assert bool((memory.flatten(1).abs().amax(dim=1) > 0).all())
