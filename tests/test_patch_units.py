"""Known answers for the patches' pure parts: temperature fit, abstention threshold,
catastrophic-overfitting rule, config rewriting, CLI settings."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from hardenml.cli.patching import parse_settings
from hardenml.config import parse_config
from hardenml.patch import PatchError, make_patch, rewrite_model_section
from hardenml.patch.abstain import risk_coverage, threshold_for_coverage
from hardenml.patch.adversarial import catastrophic_overfitting
from hardenml.patch.temperature import fit_temperature, nll
from hardenml.stats import expected_calibration_error


def test_temperature_scaling_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(0)
    n, k, true_t = 20000, 5, 2.5
    logits = rng.normal(0.0, 4.0, (n, k))
    # Labels drawn from softmax(logits / 2.5): the logits are 2.5x overconfident.
    p = np.exp(logits / true_t)
    p /= p.sum(axis=1, keepdims=True)
    y = (rng.uniform(size=(n, 1)) > p.cumsum(axis=1)).sum(axis=1)
    t = fit_temperature(logits, y)
    assert t == pytest.approx(true_t, rel=0.05)
    assert nll(logits, y, t) < nll(logits, y, 1.0)
    probs_before = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert expected_calibration_error(p, y) < 0.02 < expected_calibration_error(probs_before, y)


def test_abstention_threshold_reaches_the_target_coverage() -> None:
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.3, 1.0, 1000)
    correct = rng.uniform(size=1000) < conf
    for coverage in (0.5, 0.8, 0.9, 1.0):
        t = threshold_for_coverage(conf, coverage)
        assert (conf >= t).mean() == pytest.approx(coverage, abs=1e-3)
    curve = risk_coverage(conf, correct)
    risks = {p["coverage"]: p["selective_risk"] for p in curve["curve"]}
    assert risks[1.0] == pytest.approx(1 - correct.mean())
    # Confidence carries signal here, so answering fewer means erring less.
    assert risks[0.5] < risks[0.8] < risks[1.0]
    assert 0 < curve["aurc"] < risks[1.0]
    with pytest.raises(ValueError):
        threshold_for_coverage(conf, 0.0)


def test_catastrophic_overfitting_rule() -> None:
    best = {"clean": 0.9, "fgsm": 0.5, "pgd": 0.4}
    # PGD collapses while FGSM rises: the signature.
    assert catastrophic_overfitting(best, {"clean": 0.95, "fgsm": 0.8, "pgd": 0.05})
    # Both fall: a bad epoch, not overfitting to the single-step attack.
    assert not catastrophic_overfitting(best, {"clean": 0.7, "fgsm": 0.3, "pgd": 0.1})
    # A small wobble is noise.
    assert not catastrophic_overfitting(best, {"clean": 0.9, "fgsm": 0.55, "pgd": 0.33})
    # Near zero, halving is not a collapse.
    low = {"clean": 0.9, "fgsm": 0.1, "pgd": 0.06}
    assert not catastrophic_overfitting(low, {"clean": 0.9, "fgsm": 0.2, "pgd": 0.0})
    # FGSM accuracy far above PGD accuracy: overfit to the single-step attack from the start.
    assert catastrophic_overfitting(low, {"clean": 0.9, "fgsm": 0.45, "pgd": 0.05})
    assert not catastrophic_overfitting(low, {"clean": 0.9, "fgsm": 0.45, "pgd": 0.05}, gap=0.5)
    # ...unless PGD accuracy is climbing: one step is still weaker than many early on.
    assert not catastrophic_overfitting(low, {"clean": 0.9, "fgsm": 0.54, "pgd": 0.095})


TEMPLATE = """\
version = 1
[project]
name = "p"

[model]
name = "m"                 # stable name
kind = "pytorch"
factory = "hardenml.zoo:mlp"   # builds it
path = "old.safetensors"   # weights file
classes = ["a", "b"]

[model.factory_kwargs]
in_features = 4
classes = 2

[model.input]
shape = [4]

[data]
source = "digits"
"""


def test_rewrite_model_section_keeps_comments_and_replaces_sub_tables() -> None:
    text = rewrite_model_section(TEMPLATE, {"path": "artifacts/models/new.safetensors"})
    assert 'path = "artifacts/models/new.safetensors"   # weights file' in text
    assert "# stable name" in text and "[model.factory_kwargs]" in text
    wrapped = {"factory": "hardenml.zoo:mlp", "factory_kwargs": {"in_features": 4, "classes": 2}}
    text = rewrite_model_section(
        text,
        {"factory": "hardenml.patch.temperature:temperature_scaled", "factory_kwargs": wrapped},
    )
    assert "[model.factory_kwargs]" not in text
    model = tomllib.loads(text)["model"]
    assert model["factory"] == "hardenml.patch.temperature:temperature_scaled"
    assert model["factory_kwargs"] == wrapped
    assert model["input"] == {"shape": [4]}
    config = parse_config(text, root=Path("."))
    assert config.model.path == Path("artifacts/models/new.safetensors")
    with pytest.raises(PatchError, match=r"no \[model\] table"):
        rewrite_model_section("version = 1\n", {"path": "x"})


def test_settings_and_registry_errors() -> None:
    assert parse_settings(["eps=0.1", "epochs=2", "init=scratch", "random_start=false"]) == {
        "eps": 0.1,
        "epochs": 2,
        "init": "scratch",
        "random_start": False,
    }
    with pytest.raises(PatchError, match="KEY=VALUE"):
        parse_settings(["eps"])
    with pytest.raises(PatchError, match="registered patches"):
        make_patch("no-such-patch")
    with pytest.raises(PatchError, match="no parameter"):
        make_patch("pgd_at", {"epsilon": 0.1})
    assert repr(make_patch("trades", {"eps": 0.1, "beta": 1.0})).startswith(
        "TRADES(eps=0.1, beta=1.0"
    )


def test_cyclic_learning_rate_is_one_cycle() -> None:
    from hardenml.patch.pgd_at import PGDAT

    assert PGDAT(eps=0.1, lr_schedule="flat").lr_at() is None
    lr_at = PGDAT(eps=0.1, epochs=10, lr=1e-3, lr_schedule="cyclic").lr_at()
    assert lr_at is not None
    assert [round(lr_at(t), 9) for t in (0.0, 2.0, 4.0, 7.0, 10.0)] == [
        0.0,
        0.0005,
        0.001,
        0.0005,
        0.0,
    ]
    with pytest.raises(PatchError, match="lr_schedule"):
        PGDAT(eps=0.1, lr_schedule="steps")._check()  # type: ignore[arg-type]


def test_train_classifier_follows_the_learning_rate_schedule(digits) -> None:
    from hardenml.train import train_classifier
    from hardenml.zoo import mlp

    x, y, _, _ = digits
    torch.manual_seed(0)
    module = mlp(64, 10, hidden=8)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    seen: list[float] = []

    def frozen(t: float) -> float:
        seen.append(t)
        return 0.0

    train_classifier(module, x[:200], y[:200], epochs=2, batch_size=64, lr_at=frozen)
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    # Four steps per epoch (200 / 64), each told how far training has come.
    assert seen == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]


def test_fgsm_from_noise_known_answers() -> None:
    from torch import nn

    from hardenml.patch.fgsm_rs import fgsm_from_noise

    # Two classes, logit of class 1 = w.x: the loss for label 0 rises along +sign(w).
    net = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.0] * 4, [1.0, -2.0, 0.5, -0.1]]))
    x = torch.full((3, 4), 0.5)
    y = torch.zeros(3, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    sign = torch.tensor([1.0, -1.0, 1.0, -1.0])
    plain = fgsm_from_noise(
        net, x, y, eps=0.1, step_size=0.3, noise=0.0, project=True, bounds=(0, 1), generator=gen
    )
    assert torch.allclose(plain, x + 0.1 * sign)  # the step, clipped to the ball
    wide = fgsm_from_noise(
        net, x, y, eps=0.1, step_size=0.1, noise=0.2, project=False, bounds=(0, 1), generator=gen
    )
    # N-FGSM: noise up to 2 eps plus a step of eps, unclipped: up to 3 eps from x.
    size = (wide - x).abs()
    assert float(size.max()) <= 0.3 + 1e-6 and float(size.max()) > 0.1
    noisy = fgsm_from_noise(
        net, x, y, eps=0.1, step_size=0.1, noise=0.1, project=True, bounds=(0, 1), generator=gen
    )
    assert float((noisy - x).abs().max()) <= 0.1 + 1e-6
    # In bounds even when x sits on them and the noise points outside.
    edge = fgsm_from_noise(
        net,
        torch.zeros(3, 4),
        y,
        eps=0.1,
        step_size=0.1,
        noise=0.2,
        project=False,
        bounds=(0, 1),
        generator=gen,
    )
    assert float(edge.min()) >= 0.0
