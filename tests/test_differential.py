"""Differential tests: our gradient attacks against torchattacks and ART on the same model.

Same digits MLP, same 200 test samples, same budget and step schedule. Our robust
accuracy must be at most theirs plus one percentage point: an attack that finds fewer
adversarial examples than a reference implementation would overstate robustness.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hardenml.targets import TorchTarget
from hardenml.threats import Threat
from hardenml.threats.apgd import LinfAPGDCE
from hardenml.threats.fgsm import FGSM
from hardenml.threats.pgd import LinfPGD

torchattacks = pytest.importorskip("torchattacks")
art_attacks = pytest.importorskip("art.attacks.evasion")
art_estimators = pytest.importorskip("art.estimators.classification")

N = 200
STEPS = 10
APGD_STEPS = 20
TOLERANCE = 0.01


@pytest.fixture
def sample(digits) -> tuple[torch.Tensor, torch.Tensor]:
    _, _, x_test, y_test = digits
    return torch.from_numpy(x_test[:N]), torch.from_numpy(y_test[:N])


def _ours(target: TorchTarget, attack: Threat, x, y, eps: float) -> float:
    result = attack(target, x, y, budget=eps, generator=torch.Generator().manual_seed(0))
    return float(result.robust_correct.float().mean())


def _accuracy(module: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((module(x_adv.reshape(len(y), -1)).argmax(dim=1) == y).float().mean())


def _torchattacks(target: TorchTarget, name: str, x, y, eps: float) -> float:
    module = target.module
    if name == "fgsm":
        attack = torchattacks.FGSM(module, eps=eps)
    elif name == "pgd":
        attack = torchattacks.PGD(module, eps=eps, alpha=2.5 * eps / STEPS, steps=STEPS)
    else:
        attack = torchattacks.APGD(module, norm="Linf", eps=eps, steps=APGD_STEPS, loss="ce")
    torch.manual_seed(0)
    # torchattacks' APGD only takes image batches (n, c, h, w); the MLP flattens its input.
    x_adv = attack(x.reshape(-1, 1, 8, 8), y)
    return _accuracy(module, x_adv, y)


def _art(target: TorchTarget, name: str, x, y, eps: float) -> float:
    classifier = art_estimators.PyTorchClassifier(
        model=target.module,
        loss=nn.CrossEntropyLoss(),
        input_shape=(64,),
        nb_classes=10,
        clip_values=(0.0, 1.0),
    )
    if name == "fgsm":
        attack = art_attacks.FastGradientMethod(classifier, eps=eps, batch_size=N)
    elif name == "pgd":
        attack = art_attacks.ProjectedGradientDescent(
            classifier,
            eps=eps,
            eps_step=2.5 * eps / STEPS,
            max_iter=STEPS,
            num_random_init=1,
            batch_size=N,
            verbose=False,
        )
    else:
        attack = art_attacks.AutoProjectedGradientDescent(
            classifier,
            eps=eps,
            eps_step=2 * eps,
            max_iter=APGD_STEPS,
            nb_random_init=1,
            loss_type="cross_entropy",
            batch_size=N,
            verbose=False,
        )
    np.random.seed(0)
    x_adv = attack.generate(x.numpy(), y=y.numpy())
    return _accuracy(target.module, torch.from_numpy(x_adv), y)


OURS = {
    "fgsm": FGSM(),
    "pgd": LinfPGD(steps=STEPS),
    "apgd-ce": LinfAPGDCE(steps=APGD_STEPS),
}


@pytest.mark.parametrize("library", ["torchattacks", "art"])
@pytest.mark.parametrize("name", list(OURS))
@pytest.mark.parametrize("eps", [0.05, 0.1])
def test_at_least_as_strong_as_reference(digits_target, sample, library, name, eps) -> None:
    x, y = sample
    theirs = (_torchattacks if library == "torchattacks" else _art)(digits_target, name, x, y, eps)
    ours = _ours(digits_target, OURS[name], x, y, eps)
    assert 0.1 < theirs < 0.95, f"eps={eps} must leave the comparison something to measure"
    assert ours <= theirs + TOLERANCE, f"ours {ours:.3f} vs {library} {theirs:.3f}"


def test_fgsm_matches_torchattacks_exactly(digits_target, sample) -> None:
    """FGSM is deterministic: both implementations must produce the same examples."""
    x, y = sample
    ours = FGSM()(digits_target, x, y, budget=0.1, generator=torch.Generator())
    theirs = torchattacks.FGSM(digits_target.module, eps=0.1)(x, y)
    moved = ours.clean_correct  # we leave samples the model already gets wrong untouched
    assert torch.allclose(ours.x_adv[moved], theirs[moved], atol=1e-6)


def test_ensemble_at_its_stated_budget_matches_autoattack(digits_target, sample) -> None:
    """The bench's claim in miniature: APGD-CE 10, APGD-T 10 x 9 and Square 1,000 find at
    least what torchattacks' standard AutoAttack (with FAB-T and Square 5,000) finds."""
    from hardenml.threats.ensemble import AutoAttackEnsemble

    x, y = sample
    eps = 0.1
    ours = _ours(
        digits_target, AutoAttackEnsemble(steps=10, targets=9, square_queries=1000), x, y, eps
    )
    auto = torchattacks.AutoAttack(
        digits_target.module, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0
    )
    theirs = _accuracy(digits_target.module, auto(x.reshape(-1, 1, 8, 8), y), y)
    assert 0 < theirs < 1  # a budget where the comparison means something
    assert ours <= theirs + TOLERANCE, (ours, theirs)
