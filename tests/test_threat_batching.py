"""Memory-bounded chunks: the model never sees more rows at once than the budget allows,
and splitting a batch does not change what a deterministic attack finds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hardenml.targets import InputSpec, TorchTarget
from hardenml.threats import threat_class
from hardenml.threats.batching import (
    ENV_BUDGET,
    activation_bytes_per_row,
    chunk_rows,
    input_bytes_per_row,
    memory_budget,
)
from hardenml.threats.fgsm import FGSM
from hardenml.threats.minimal import MinimalPerturbation
from hardenml.threats.pgd import LinfPGD


class RowCounter(nn.Module):
    """Passes through; remembers the largest batch the model was given."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.largest = max(self.largest, x.shape[0])
        return x


def _target(module: nn.Module, features: int = 64) -> TorchTarget:
    return TorchTarget(
        module, input_spec=InputSpec(shape=(features,)), classes=["0", "1", "2"], device="cpu"
    )


def _mlp(hidden: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 3))


def _data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 64, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_activation_bytes_grow_with_the_layers_and_exclude_weights() -> None:
    small, large = _target(_mlp(16)), _target(_mlp(1024))
    # float32 activations: the hidden layer dominates, the 1024x64 weights are not per row.
    assert 0 < activation_bytes_per_row(small) < activation_bytes_per_row(large)
    assert activation_bytes_per_row(large) >= 1024 * 4
    assert activation_bytes_per_row(large) < 64 * 1024 * 4
    assert input_bytes_per_row(small) == 64 * 4


def test_measuring_is_not_a_query() -> None:
    target = _target(_mlp(16))
    activation_bytes_per_row(target)
    assert target.queries == 0


def test_budget_comes_from_target_then_environment(monkeypatch) -> None:
    target = _target(_mlp(16))
    monkeypatch.setenv(ENV_BUDGET, "2")
    assert memory_budget(target) == 2 * 2**20
    target.memory_budget = 12345
    assert memory_budget(target) == 12345
    target.memory_budget = None
    monkeypatch.setenv(ENV_BUDGET, "lots")
    with pytest.raises(ValueError, match=ENV_BUDGET):
        memory_budget(target)


@pytest.mark.parametrize("make", [FGSM, lambda: LinfPGD(steps=5, random_start=False)])
def test_chunks_bound_the_rows_and_keep_the_result(make) -> None:
    counter = RowCounter()
    target = _target(nn.Sequential(_mlp(32), counter))
    x, y = _data(200)
    whole = make()(target, x, y, budget=0.1, generator=torch.Generator().manual_seed(0))
    assert counter.largest == 200

    per_row = activation_bytes_per_row(target) + 8 * input_bytes_per_row(target)
    target.memory_budget = 23 * per_row
    assert chunk_rows(target, 8) == 23
    counter.largest = 0
    split = make()(target, x, y, budget=0.1, generator=torch.Generator().manual_seed(0))
    assert 0 < counter.largest <= 23
    assert torch.equal(split.x_adv, whole.x_adv)
    assert torch.equal(split.success, whole.success)
    assert torch.equal(split.clean_correct, whole.clean_correct)
    assert split.queries == whole.queries


def test_chunked_random_attack_is_seeded() -> None:
    target = _target(_mlp(32))
    target.memory_budget = 1  # one row per chunk
    x, y = _data(12)
    attack = threat_class("square")(queries=20)
    a = attack(target, x, y, budget=0.1, generator=torch.Generator().manual_seed(3))
    b = attack(target, x, y, budget=0.1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.x_adv, b.x_adv)
    assert a.x_adv.shape == x.shape


def test_chunks_merge_smallest_perturbations() -> None:
    target = _target(_mlp(32))
    x, y = _data(40)
    whole = MinimalPerturbation(pgd_steps=5, bisections=4)(
        target, x, y, budget=0.5, generator=torch.Generator().manual_seed(0)
    )
    target.memory_budget = 1
    split = MinimalPerturbation(pgd_steps=5, bisections=4)(
        target, x, y, budget=0.5, generator=torch.Generator().manual_seed(0)
    )
    assert split.min_perturbation is not None and whole.min_perturbation is not None
    assert split.min_perturbation.shape == (40,)
    # Rows the model already got wrong are 0; attacked rows have a size or NaN.
    wrong = ~split.clean_correct
    assert torch.all(split.min_perturbation[wrong] == 0)


class NeedsSmallChunks(FGSM):
    """FGSM that runs out of memory on more than 4 samples at a time, as a GPU would."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes_: list[int] = []

    def run(self, target, x, y, budget, generator):  # type: ignore[no-untyped-def]
        torch.rand(1, generator=generator)  # a draw, to check the retry restores the state
        if x.shape[0] > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        self.sizes_.append(x.shape[0])
        return super().run(target, x, y, budget, generator)


def test_out_of_memory_halves_the_chunk_and_retries(caplog) -> None:
    target = _target(_mlp(32))
    x, y = _data(40)
    y = target.predict(x)  # every sample clean-correct, so every chunk reaches `run`
    gen = torch.Generator().manual_seed(0)
    attack = NeedsSmallChunks()
    with caplog.at_level("WARNING"):
        result = attack(target, x, y, budget=0.1, generator=gen)
    # 40 -> 20 -> 10 -> 5 -> 2: halved from what the chunk held, not from the budget.
    assert "retries with chunks of 20 samples" in caplog.text
    assert sum(attack.sizes_) == 40 and max(attack.sizes_) <= 4
    expected = FGSM()(target, x, y, budget=0.1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(result.x_adv, expected.x_adv)
    # Each chunk that ran drew once; the failed attempts' draws were rolled back.
    reference = torch.Generator().manual_seed(0)
    for _ in attack.sizes_:
        torch.rand(1, generator=reference)
    assert torch.equal(gen.get_state(), reference.get_state())
