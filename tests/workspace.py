"""Build real workspaces (config + weights) in a temporary folder for CLI tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

DIGITS_CONFIG = """\
version = 1

[project]
name = "digits-test"

[model]
name = "digits-mlp"
kind = "pytorch"
factory = "hardenml.zoo:mlp"
factory_kwargs = {{ in_features = 64, classes = 10, hidden = 32 }}
path = "{weights}"
classes = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
device = "cpu"

[model.input]
shape = [64]
bounds = [0.0, 1.0]

[data]
source = "digits"
test_fraction = 0.25
seed = 0
max_samples = {max_samples}

[[threats]]
name = "pgd-linf"
attack = "pgd"
budgets = [0.02, 0.1]
steps = 10

[policy]
min_clean_accuracy = {min_clean}

[[policy.robust]]
threat = "pgd-linf"
budget = 0.1
min_accuracy = {min_robust}

[owners]
"pgd-linf" = "robustness-team"
"*" = "ml-platform"

[integrity]
enabled = {integrity}
"""


def digits_head(project: str, *, max_samples: int) -> str:
    """The `[project]`, `[model]` (the digits MLP of tests/conftest.py, weights in
    model.safetensors) and `[data]` sections of a digits workspace's hardenml.toml; a test
    appends its threats and policy."""
    return f"""\
version = 1

[project]
name = "{project}"

[model]
name = "digits-mlp"
kind = "pytorch"
factory = "hardenml.zoo:mlp"
path = "model.safetensors"
classes = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
device = "cpu"

[model.factory_kwargs]
in_features = 64
classes = 10
hidden = 32

[model.input]
shape = [64]
bounds = [0.0, 1.0]

[data]
source = "digits"
test_fraction = 0.25
seed = 0
max_samples = {max_samples}
"""


def write_workspace(
    folder: Path,
    weights: Path,
    *,
    min_clean: float = 0.8,
    min_robust: float = 0.9,
    max_samples: int = 120,
    integrity: bool = False,
) -> Path:
    """A digits-MLP workspace. Integrity checks are off unless asked for: they cost a few
    extra attacks per scan and have their own tests."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "model.safetensors"
    if weights.resolve() != target.resolve():
        target.write_bytes(weights.read_bytes())
    config = folder / "hardenml.toml"
    config.write_text(
        DIGITS_CONFIG.format(
            weights=target.name,
            min_clean=min_clean,
            min_robust=min_robust,
            max_samples=max_samples,
            integrity=str(integrity).lower(),
        )
    )
    return config


def nan_model(in_features: int = 64, classes: int = 10) -> Any:
    """A model whose outputs are NaN: the scan must explain it, not crash on it."""
    import torch
    from torch import nn

    class NaNOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(in_features, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layer(x) * float("nan")

    return NaNOut()


def digits_workspace(folder: Path, weights: Path, config: str) -> Path:
    """`config` as hardenml.toml beside a copy of the digits MLP's weights (model.safetensors);
    callers chdir into the folder so the CLI finds it."""
    (folder / "model.safetensors").write_bytes(weights.read_bytes())
    (folder / "hardenml.toml").write_text(config)
    return folder
