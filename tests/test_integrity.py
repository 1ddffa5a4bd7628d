"""Evaluation integrity: each check fires on a model built to trip it, and stays silent
on an honest one."""

from __future__ import annotations

import torch
from torch import nn

from hardenml.config import IntegrityConfig
from hardenml.scan.integrity import check_threat, gradient_health
from hardenml.targets import InputSpec, TorchTarget
from hardenml.threats.pgd import LinfPGD


class QuantisedInput(nn.Module):
    """Rounds its input before the classifier: a gradient-masking 'defence' (zero gradients
    almost everywhere), the textbook case of Athalye et al. 2018."""

    def __init__(self, model: nn.Module, levels: int = 4) -> None:
        super().__init__()
        self.model, self.levels = model, levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * self.levels) / self.levels)


def _data(digits, n: int = 80) -> tuple[torch.Tensor, torch.Tensor]:
    _, _, x_test, y_test = digits
    return torch.from_numpy(x_test[:n]), torch.from_numpy(y_test[:n])


def _target(module: nn.Module) -> TorchTarget:
    return TorchTarget(
        module, input_spec=InputSpec(shape=(64,)), classes=[str(i) for i in range(10)], device="cpu"
    )


CONFIG = IntegrityConfig(blackbox_queries=300)


def test_honest_model_passes_every_check(digits_mlp, digits):
    x, y = _data(digits)
    results = check_threat(
        "pgd-linf", LinfPGD(steps=20), _target(digits_mlp), x, y, 0.1, config=CONFIG, seed=0
    )
    assert [r.check for r in results] == [
        "blackbox_beats_whitebox",
        "no_convergence_to_zero",
        "not_converged",
        "broken_gradients",
    ]
    assert not [r for r in results if r.flagged], [r.detail for r in results if r.flagged]


def test_quantised_input_model_is_caught_masking(digits_mlp, digits):
    x, y = _data(digits)
    target = _target(QuantisedInput(digits_mlp))
    results = {
        r.check: r
        for r in check_threat(
            "pgd-linf", LinfPGD(steps=20), target, x, y, 0.1, config=CONFIG, seed=0
        )
    }
    assert results["broken_gradients"].flagged and results["broken_gradients"].value > 0.9
    assert results["blackbox_beats_whitebox"].flagged, results["blackbox_beats_whitebox"].detail


def test_too_few_steps_is_caught_not_converging(digits_mlp, digits):
    x, y = _data(digits)
    # Two small steps travel a fifth of the way to the ball's surface.
    weak = LinfPGD(steps=2, step_size=0.01, random_start=False)
    results = {
        r.check: r
        for r in check_threat("weak", weak, _target(digits_mlp), x, y, 0.1, config=CONFIG, seed=0)
    }
    assert results["not_converged"].flagged, results["not_converged"].detail


def test_gradient_health_counts_dead_gradients(digits_mlp, digits):
    x, y = _data(digits, 40)
    assert gradient_health(_target(digits_mlp), x, y, seed=0) == (0.0, 0.0)
    dead, _ = gradient_health(_target(QuantisedInput(digits_mlp)), x, y, seed=0)
    assert dead == 1.0


def test_scan_of_a_masked_model_opens_an_unreliable_evaluation_finding(tmp_path, digits_mlp):
    """End to end: the scan runs the checks and the finding blocks the gate."""
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
    config.write_text(text + "samples = 60\n")
    decision = workflow.gate(workflow.Workspace.open(config))
    unreliable = [
        f for f in decision.blocking_findings if f.title.startswith("Evaluation unreliable")
    ]
    assert unreliable and not decision.passed
    assert {f.threat for f in unreliable} == {"pgd-linf"}


def quantised_mlp(in_features: int, classes: int, hidden: int) -> nn.Module:
    """Factory for the end-to-end test: the digits MLP behind input quantisation."""
    from hardenml.zoo import mlp

    return QuantisedInput(mlp(in_features, classes, hidden))
