"""Small reference architectures, importable as model factories (`hardenml.zoo:mnist_cnn`).

The demo and the tests train these on real data; users point `model.factory` at
their own module the same way.
"""

from __future__ import annotations

from torch import nn


def mnist_cnn(channels: int = 16, hidden: int = 64) -> nn.Module:
    """A two-layer CNN for 1x28x28 digits: about 60k parameters, trains in seconds on a CPU."""
    return nn.Sequential(
        nn.Conv2d(1, channels, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(channels, 2 * channels, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * channels * 7 * 7, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 10),
    )


def mlp(in_features: int, classes: int, hidden: int = 64) -> nn.Module:
    """A one-hidden-layer perceptron for flat tabular or small-image inputs."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, classes)
    )
