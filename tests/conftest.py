"""Shared fixtures: real data, real models trained in seconds, real files on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings
from safetensors.torch import save_file
from torch import nn

from hardenml.data import load_source, split
from hardenml.targets import InputSpec, TorchTarget
from hardenml.train import train_classifier
from hardenml.zoo import mlp

DIGITS_CLASSES = [str(i) for i in range(10)]

# Tiny models on 2 cores: one intra-op thread per test process is several times faster
# than threads that spin against each other (pytest runs two processes).
torch.set_num_threads(1)

# Property tests explore the same examples on every run, so CI never flakes on a new one.
settings.register_profile("hardenml", derandomize=True)
settings.load_profile("hardenml")


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits, flat 64 features in [0, 1]: (x_train, y_train, x_test, y_test)."""
    train, test = split(load_source("digits"), test_fraction=0.25, seed=0)
    return train.x, train.y, test.x, test.y


@pytest.fixture(scope="session")
def digits_mlp(digits: tuple[np.ndarray, ...]) -> nn.Module:
    x_train, y_train, _, _ = digits
    torch.manual_seed(0)  # the initial weights come from the global generator
    return train_classifier(mlp(64, 10, hidden=32), x_train, y_train, epochs=15, seed=0)


@pytest.fixture
def digits_target(digits_mlp: nn.Module) -> TorchTarget:
    """A fresh target (query counter at zero) around the session's trained MLP."""
    return TorchTarget(
        digits_mlp, input_spec=InputSpec(shape=(64,)), classes=DIGITS_CLASSES, device="cpu"
    )


@pytest.fixture
def digits_weights(tmp_path: Path, digits_mlp: nn.Module) -> Path:
    path = tmp_path / "mlp.safetensors"
    save_file({k: v.contiguous() for k, v in digits_mlp.state_dict().items()}, str(path))
    return path


def linear_module(w: np.ndarray, b: float) -> nn.Module:
    """Binary classifier with logits [0, w.x + b]: class 1 iff w.x + b > 0."""
    layer = nn.Linear(len(w), 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(np.stack([np.zeros_like(w), w]), dtype=torch.float32))
        layer.bias.copy_(torch.tensor([0.0, b], dtype=torch.float32))
    return layer
