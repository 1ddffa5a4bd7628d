"""The `art` threat runs any ART evasion attack named in the config, with its parameters
checked like every other key (issue 11, finding 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hardenml.config import ConfigError, parse_config
from hardenml.targets import TorchTarget
from hardenml.threats import perturbation_size, validate_threats
from hardenml.threats.art_adapter import ARTEvasion
from workspace import DIGITS_CONFIG

BASE = DIGITS_CONFIG.format(
    weights="model.safetensors", min_clean=0.8, min_robust=0.5, max_samples=100, integrity="false"
)
PGD_THREAT = """[[threats]]
name = "pgd-linf"
attack = "pgd"
budgets = [0.02, 0.1]
steps = 10
"""
ART_THREATS = """[[threats]]
name = "pgd-linf"
attack = "art"
budgets = [0.02, 0.1]
art_attack = "ProjectedGradientDescent"
art_params = { max_iter = 10, num_random_init = 1 }

[[threats]]
name = "cw-l2"
attack = "art"
budgets = [1.0]
norm = "l2"
art_attack = "CarliniL2Method"

[threats.art_params]
max_iter = 5
binary_search_steps = 2
initial_const = 1.0
learning_rate = 0.1
batch_size = 32

[[threats]]
name = "hsj-l2"
attack = "art"
budgets = [2.0]
norm = "l2"
art_attack = "HopSkipJump"

[threats.art_params]
max_iter = 2
max_eval = 40
init_eval = 5
"""


def _config(threats: str):
    assert PGD_THREAT in BASE
    return parse_config(BASE.replace(PGD_THREAT, threats), root=Path("."))


def _problems(threats: str) -> list:
    with pytest.raises(ConfigError) as info:
        validate_threats(_config(threats))
    return info.value.problems


def test_the_config_chooses_pgd_carlini_wagner_and_hopskipjump(
    digits_target: TorchTarget, digits: tuple[np.ndarray, ...]
) -> None:
    threats = validate_threats(_config(ART_THREATS))
    assert {name: t.art_attack for name, t in threats.items()} == {
        "pgd-linf": "ProjectedGradientDescent",
        "cw-l2": "CarliniL2Method",
        "hsj-l2": "HopSkipJump",
    }
    assert threats["hsj-l2"].art_params == {"max_iter": 2, "max_eval": 40, "init_eval": 5}
    _, _, x_test, y_test = digits
    x, y = torch.from_numpy(x_test[:32]), torch.from_numpy(y_test[:32])
    for name, budget, n in (("pgd-linf", 0.1, 32), ("cw-l2", 1.0, 32), ("hsj-l2", 2.0, 4)):
        threat = threats[name]
        result = threat(
            digits_target, x[:n], y[:n], budget=budget, generator=torch.Generator().manual_seed(0)
        )
        size = perturbation_size(x[:n], result.x_adv, threat.norm)
        assert float(size.max()) <= budget * (1 + 1e-5), name
        assert result.queries > n, f"{name}: ART's forwards go through the target"
        if name != "hsj-l2":  # a few HopSkipJump iterations need not flip anything
            flipped = int((result.clean_correct & result.success).sum())
            assert flipped >= 3, f"{name} flipped {flipped} of {n}"
    # Seeded: ART's gradient attacks repeat exactly under the same generator.
    again = threats["pgd-linf"](
        digits_target, x, y, budget=0.1, generator=torch.Generator().manual_seed(0)
    )
    first = threats["pgd-linf"](
        digits_target, x, y, budget=0.1, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(first.x_adv, again.x_adv)


def test_pgd_of_ten_steps_differs_from_the_default_fgsm(
    digits_target: TorchTarget, digits: tuple[np.ndarray, ...]
) -> None:
    """`art_params = { max_iter = 10 }` reaches the chosen attack (it used to reach
    FastGradientMethod, which refused it)."""
    _, _, x_test, y_test = digits
    x, y = torch.from_numpy(x_test[:32]), torch.from_numpy(y_test[:32])
    gen = torch.Generator().manual_seed
    pgd = ARTEvasion(art_attack="ProjectedGradientDescent", art_params={"max_iter": 10})
    fgsm = ARTEvasion()
    strong = pgd(digits_target, x, y, budget=0.05, generator=gen(0))
    single = fgsm(digits_target, x, y, budget=0.05, generator=gen(0))
    assert not torch.equal(strong.x_adv, single.x_adv)
    assert int(strong.success.sum()) >= int(single.success.sum())


@pytest.mark.parametrize(
    ("lines", "key", "expected"),
    [
        ('art_attack = "NoSuchAttack"', "threats[0].art_attack", "HopSkipJump"),
        ('art_attack = "Threat"', "threats[0].art_attack", "evasion attack"),
        ("art_params = { bogus = 1 }", "threats[0].art_params.bogus", "eps_step"),
        ('art_params = { max_iter = "ten" }', "threats[0].art_params.max_iter", "whole number"),
        ("art_params = { max_iter = 2.5 }", "threats[0].art_params.max_iter", "whole number"),
        ('art_params = { estimator = "x" }', "threats[0].art_params.estimator", "supplies"),
        ('norm = "l1"', "threats[0].norm", "one of ['linf', 'l2', 'none']"),
        ('norm = "none"', "threats[0].norm", "'linf' or 'l2'"),
        ("params = { max_iter = 10 }", "threats[0].params", "art_params"),
    ],
)
def test_art_config_errors_name_the_key_and_line(lines: str, key: str, expected: str) -> None:
    threat = f"""[[threats]]
name = "pgd-linf"
attack = "art"
budgets = [0.1]
art_attack = "ProjectedGradientDescent"
{lines}
"""
    if lines.startswith("art_attack"):
        threat = threat.replace('art_attack = "ProjectedGradientDescent"\n', "")
    (problem,) = _problems(threat)
    assert problem.key == key and expected in problem.expected, problem
    assert problem.line is not None
    text = BASE.replace(PGD_THREAT, threat)
    assert text.splitlines()[problem.line - 1].startswith(lines.split(" ")[0])
