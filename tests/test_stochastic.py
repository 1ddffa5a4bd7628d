"""Stochastic models: detected before any attack, judged under a declared rule with EOT
gradients, and seeded so that the same config and seed give the same numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from hardenml import workflow
from hardenml.cli import app
from hardenml.config import ConfigError, parse_config
from hardenml.scan import ScanResult, run_scan
from hardenml.scan.stochastic import probe, stochastic_view
from hardenml.targets import InputSpec, Target, TorchTarget
from hardenml.targets.stochastic import StochasticTarget
from hardenml.threats import threat_class, validate_threats
from workspace import write_workspace

CLASSES = [str(i) for i in range(10)]
NOISE = 0.3
BUDGET = 0.15
STEPS = 20
DRAWS = 20
RULE = '[model.stochastic]\nrule = "mean"\nsamples = 10\neot_samples = {m}\n'

NOISY_CONFIG = """\
version = 1

[project]
name = "noisy-test"

[model]
name = "noisy-mlp"
kind = "torchscript"
path = "noisy.pt"
classes = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
device = "cpu"

[model.input]
shape = [64]
bounds = [0.0, 1.0]

{stochastic}
[data]
source = "digits"
test_fraction = 0.25
seed = 0
max_samples = {max_samples}

[scan]
batch_size = 50

[[threats]]
name = "pgd"
attack = "pgd"
budgets = [{budget}]
steps = {steps}

[policy]
min_clean_accuracy = 0.5

[[policy.robust]]
threat = "pgd"
budget = {budget}
min_accuracy = 0.0

[integrity]
enabled = false
"""


class NoisyInput(nn.Module):
    """A randomised defence: fresh Gaussian noise on the input at every call."""

    def __init__(self, net: nn.Module, sigma: float) -> None:
        super().__init__()
        self.net = net
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x + self.sigma * torch.randn_like(x))


def noisy_workspace(
    folder: Path, net: nn.Module, *, eot_samples: int | None = DRAWS, max_samples: int = 100
) -> Path:
    """A workspace around the digits MLP with input noise, saved as TorchScript; the rule
    (mean over 10 calls, `eot_samples` draws per step) is declared unless None."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(NoisyInput(net, NOISE)), str(folder / "noisy.pt"))
    rule = "" if eot_samples is None else RULE.format(m=eot_samples)
    config = folder / "hardenml.toml"
    config.write_text(
        NOISY_CONFIG.format(stochastic=rule, budget=BUDGET, steps=STEPS, max_samples=max_samples)
    )
    return config


@pytest.fixture
def noisy_target(digits_mlp: nn.Module) -> TorchTarget:
    return TorchTarget(
        NoisyInput(digits_mlp, NOISE), input_spec=InputSpec(shape=(64,)), classes=CLASSES
    )


def robust_accuracy(result: ScanResult) -> float:
    return result.measurement(f"robust_accuracy[pgd@{BUDGET:g}]").value


def eot_pgd_baseline(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Robust accuracy under plain EOT-PGD (Athalye et al. 2018): each step's gradient is
    the mean of the cross-entropy gradients over DRAWS noise draws; the verdict is the mean
    rule over 10 calls, on the clean and on the adversarial input."""
    torch.manual_seed(1)
    step = 2.5 * BUDGET / STEPS
    adv = (x + (2 * torch.rand(x.shape) - 1) * BUDGET).clamp(0, 1)
    for _ in range(STEPS):
        adv.requires_grad_(True)
        grads = [
            torch.autograd.grad(F.cross_entropy(model(adv), y, reduction="sum"), adv)[0]
            for _ in range(DRAWS)
        ]
        moved = adv.detach() + step * torch.stack(grads).mean(0).sign()
        adv = torch.min(torch.max(moved, x - BUDGET), x + BUDGET).clamp(0, 1)

    def mean_rule(inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            probs = torch.stack([torch.softmax(model(inputs), 1) for _ in range(10)])
        return probs.mean(0).argmax(1)

    return float(((mean_rule(x) == y) & (mean_rule(adv) == y)).float().mean())


def test_a_noisy_model_is_detected_and_a_deterministic_one_is_not(noisy_target, digits_target):
    x = torch.rand(8, 64)
    change, reproducible = probe(noisy_target, x, seed=0)
    assert change > 0.01 and reproducible
    assert probe(digits_target, x, seed=0) == (0.0, True)


def test_randomness_the_scan_cannot_seed_is_reported_as_not_reproducible(digits_mlp):
    class OwnGenerator(nn.Module):
        """Draws its noise from a generator of its own, out of the scan's reach."""

        def __init__(self) -> None:
            super().__init__()
            self.net = digits_mlp
            self.noise = torch.Generator().manual_seed(7)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x + 0.2 * torch.randn(x.shape, generator=self.noise))

    target = TorchTarget(OwnGenerator(), input_spec=InputSpec(shape=(64,)), classes=CLASSES)
    change, reproducible = probe(target, torch.rand(8, 64), seed=0)
    assert change > 0.01 and not reproducible


def test_an_undeclared_stochastic_model_is_a_config_error(tmp_path: Path, digits_mlp):
    config = noisy_workspace(tmp_path / "ws", digits_mlp, eot_samples=None)
    result = CliRunner().invoke(app, ["scan", "--config", str(config)], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "model.stochastic.rule" in text
    assert (
        "outputs change between calls" in text and "declare model.stochastic (rule, K, M)" in text
    )
    # Nothing was recorded: no deterministic-style number reached the ledger.
    assert not workflow.Workspace.open(config).ledger.events()


def test_detect_false_skips_the_probe(tmp_path: Path, digits_mlp, noisy_target):
    text = NOISY_CONFIG.format(
        stochastic="[model.stochastic]\ndetect = false\n", budget=BUDGET, steps=STEPS, max_samples=9
    )
    config = parse_config(text, root=tmp_path)
    target, check = stochastic_view(config, noisy_target, torch.rand(20, 64), seed=0)
    assert target is noisy_target and not check.checked and check.n == 0


def test_draws_without_a_rule_are_a_config_error(tmp_path: Path):
    text = NOISY_CONFIG.format(
        stochastic="[model.stochastic]\nsamples = 5\n", budget=BUDGET, steps=STEPS, max_samples=9
    )
    with pytest.raises(ConfigError, match=r"model\.stochastic.*add rule = "):
        parse_config(text, root=tmp_path)


@pytest.mark.slow
def test_eot_scan_is_at_least_as_strong_as_a_plain_eot_pgd_baseline(tmp_path: Path, digits_mlp):
    ws = workflow.Workspace.open(noisy_workspace(tmp_path / "eot", digits_mlp, max_samples=200))
    result = workflow.scan(ws)
    assert result.stochastic is not None and result.stochastic.stochastic
    data = ws.evaluation_data()
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    model = torch.jit.load(str(tmp_path / "eot" / "noisy.pt"))
    baseline = eot_pgd_baseline(model, x, y)
    assert robust_accuracy(result) <= baseline

    def attack(name: str, target: Target, **params: int) -> float:
        found = threat_class(name)(**params)(
            target, x, y, budget=BUDGET, generator=torch.Generator().manual_seed(0)
        )
        return float(found.robust_correct.float().mean())

    # APGD through the rule, which goes on past its first wrong iterate, is as strong.
    one_call = TorchTarget(model, input_spec=InputSpec(shape=(64,)), classes=CLASSES)
    ruled = StochasticTarget(one_call, rule="mean", samples=10, eot_samples=DRAWS, seed=0)
    assert attack("apgd-ce", ruled, steps=STEPS) <= baseline
    # One call per decision and per step (the way a deterministic model is scanned)
    # overstates: what the scan reported before it knew stochastic models.
    assert attack("pgd", one_call, steps=STEPS) > robust_accuracy(result) + 0.1


def test_same_config_and_seed_give_identical_numbers(tmp_path: Path, digits_mlp):
    ws = workflow.Workspace.open(noisy_workspace(tmp_path / "repeat", digits_mlp, max_samples=60))
    runs = [workflow.scan(ws) for _ in range(4)]
    numbers = {tuple((m.key, m.value) for m in r.measurements[:2]) for r in runs}
    assert len(numbers) == 1
    assert len({r.queries for r in runs}) == 1


def test_a_resumed_stochastic_scan_ends_with_the_same_numbers(tmp_path: Path, digits_mlp):
    ws = workflow.Workspace.open(noisy_workspace(tmp_path / "resume", digits_mlp))
    threats = validate_threats(ws.config)
    _, data = ws.datasets()

    def scan() -> list[float]:
        result = run_scan(
            ws.config, ws.load_target(), data, threats, model_sha256="m", fingerprint="f" * 64
        )
        return [m.value for m in result.measurements[:2]]

    full = scan()
    batches = sorted((ws.config.artifacts_dir / "checkpoints").glob("*/batch-*.npz"))
    assert len(batches) == 2
    batches[1].unlink()  # as if the scan had died after its first batch
    assert scan() == full


def test_rule_and_draws_are_in_the_run_the_output_and_the_gate_report(tmp_path: Path, digits_mlp):
    config = noisy_workspace(tmp_path / "cli", digits_mlp)
    runner = CliRunner()
    scan = runner.invoke(app, ["scan", "--config", str(config)], catch_exceptions=False)
    assert scan.exit_code == 0, scan.output
    text = " ".join(scan.output.split())
    assert "decided by mean over K=10 calls, gradients averaged over M=20 draws" in text
    (run,) = workflow.Workspace.open(config).ledger.events(["run.completed"])
    recorded = run.payload["stochastic"]
    assert recorded["stochastic"] and recorded["reproducible"] and recorded["n"] == 8
    assert (recorded["rule"], recorded["samples"], recorded["eot_samples"]) == ("mean", 10, 20)
    gate = runner.invoke(app, ["gate", "--config", str(config)], catch_exceptions=False)
    assert gate.exit_code == 0, gate.output
    report = json.loads((config.parent / "gate-report.json").read_text())
    assert report["model"]["stochastic"] == recorded


def test_a_deterministic_model_is_scanned_as_before(tmp_path: Path, digits_weights: Path):
    config = write_workspace(tmp_path / "plain", digits_weights, max_samples=40)
    scan = CliRunner().invoke(app, ["scan", "--config", str(config)], catch_exceptions=False)
    assert scan.exit_code == 0, scan.output
    assert "deterministic model: two calls on 8 inputs gave the same outputs" in scan.output
    (run,) = workflow.Workspace.open(config).ledger.events(["run.completed"])
    assert run.payload["stochastic"]["stochastic"] is False
    assert run.payload["stochastic"]["rule"] is None


class SplitVote(nn.Module):
    """70% of calls: class 0 by a hair (0.51 against 0.49 for class 1); 30%: class 1 at
    0.99. The majority says 0, the mean of the probabilities (0.36 against 0.64) says 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hair = torch.tensor([0.51, 0.49, 1e-9]).log()
        sure = torch.tensor([0.005, 0.99, 0.005]).log()
        pick = torch.rand(x.shape[0], 1) < 0.7
        return torch.where(pick, hair, sure)


def split_vote(rule: str, draws: int = 101) -> StochasticTarget:
    inner = TorchTarget(SplitVote(), input_spec=InputSpec(shape=(2,)), classes=["a", "b", "c"])
    return StochasticTarget(inner, rule=rule, samples=draws, eot_samples=7, seed=0)  # type: ignore[arg-type]


def test_vote_is_the_majority_and_mean_the_mean_of_the_probabilities():
    x = torch.zeros(40, 2)
    assert (split_vote("vote").predict(x) == 0).all()
    assert (split_vote("mean").predict(x) == 1).all()
    shares = torch.softmax(split_vote("vote").logits(x), 1)
    assert torch.allclose(shares.sum(1), torch.ones(40, dtype=shares.dtype))
    assert float(shares[:, 0].mean()) == pytest.approx(0.7, abs=0.05)


def test_queries_count_every_underlying_call():
    target = split_vote("mean", draws=5)
    with torch.no_grad():
        target.logits(torch.zeros(3, 2))
    assert target.queries == 15 and target.inner.queries == 15
    x = torch.zeros(3, 2, requires_grad=True)
    target.logits(x)  # a gradient step: M = 7 draws
    assert target.queries == 15 + 21


def test_draws_are_seeded_fresh_per_call_and_the_global_generators_restored():
    def wrapped() -> StochasticTarget:
        net = nn.Linear(64, 10)
        weights = torch.Generator().manual_seed(0)
        nn.init.normal_(net.weight, generator=weights)
        nn.init.zeros_(net.bias)
        inner = TorchTarget(
            NoisyInput(net, NOISE), input_spec=InputSpec(shape=(64,)), classes=CLASSES
        )
        return StochasticTarget(inner, rule="mean", samples=3, eot_samples=3, seed=0)

    def outputs(target: Target) -> list[torch.Tensor]:
        with torch.no_grad():
            return [target.logits(x) for _ in range(2)]

    x = torch.rand(16, 64)
    one, two = wrapped(), wrapped()
    torch.manual_seed(3)
    np.random.seed(3)
    before, np_before = torch.get_rng_state(), np.random.get_state()[1].copy()
    first, again = outputs(one), outputs(two)
    assert not torch.equal(first[0], first[1])  # the same input sent twice: fresh draws
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert torch.equal(torch.get_rng_state(), before)
    assert np.array_equal(np.random.get_state()[1], np_before)
