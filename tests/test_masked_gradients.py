"""Adaptive attacks on models that mask their gradients (Athalye et al. 2018; Tramer et al.
2020): losses saturation cannot hide, BPDA through declared preprocessing, and the
ensemble handing zero-gradient samples straight to its black-box stage."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import DIGITS_CLASSES
from hardenml.config import ConfigError, parse_config
from hardenml.targets import InputSpec, TorchTarget, load_target
from hardenml.threats import ThreatError
from hardenml.threats._gradient import gradient_is_useless
from hardenml.threats.ensemble import AutoAttackEnsemble
from hardenml.threats.fgsm import FGSM
from hardenml.threats.pgd import LinfPGD
from hardenml.threats.pgd_l2 import L2PGD
from hardenml.threats.square import LinfSquare

EPS = 0.1


class Quantised(nn.Module):
    """The classifier behind input quantisation to `levels` values: zero gradient a.e."""

    def __init__(self, inner: nn.Module, levels: int) -> None:
        super().__init__()
        self.inner, self.levels = inner, levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = self.levels - 1
        return self.inner(torch.round(x * steps) / steps)


class Scaled(nn.Module):
    """Logits times a large constant: softmax saturates, cross-entropy gradients vanish."""

    def __init__(self, inner: nn.Module, factor: float) -> None:
        super().__init__()
        self.inner, self.factor = inner, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.factor


def _target(module: nn.Module, preprocessing: tuple[str, ...] = ()) -> TorchTarget:
    spec = InputSpec(shape=(64,), preprocessing=preprocessing)
    return TorchTarget(module, input_spec=spec, classes=DIGITS_CLASSES, device="cpu")


def _robust(result) -> float:
    return float(result.robust_correct.float().mean())


def _seed() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.fixture
def batch(digits) -> tuple[torch.Tensor, torch.Tensor]:
    _, _, x_test, y_test = digits
    return torch.from_numpy(x_test[:120]), torch.from_numpy(y_test[:120])


def test_margin_and_dlr_are_not_fooled_by_scaled_logits(digits_mlp, batch) -> None:
    """Scaling the logits by 1e4 changes no prediction, but saturates cross-entropy: CE-PGD
    stalls. The margin and DLR losses give signed steps that do not depend on the scale,
    so PGD with them finds on the scaled model what it finds on the plain one."""
    x, y = batch
    plain, scaled = _target(digits_mlp), _target(Scaled(digits_mlp, 1e4))
    assert bool((plain.predict(x) == scaled.predict(x)).all())
    ce_plain = _robust(LinfPGD(steps=20)(plain, x, y, budget=EPS, generator=_seed()))
    ce_scaled = _robust(LinfPGD(steps=20)(scaled, x, y, budget=EPS, generator=_seed()))
    assert ce_scaled > ce_plain + 0.2, "the masked model must fool cross-entropy PGD"
    for loss in ("margin", "dlr"):
        on_plain = _robust(LinfPGD(steps=20, loss=loss)(plain, x, y, budget=EPS, generator=_seed()))
        on_scaled = _robust(
            LinfPGD(steps=20, loss=loss)(scaled, x, y, budget=EPS, generator=_seed())
        )
        assert abs(on_scaled - on_plain) <= 2 / len(y), loss
        assert on_scaled <= ce_plain + 0.05, loss
    l2 = L2PGD(steps=20, loss="margin")(scaled, x, y, budget=1.0, generator=_seed())
    assert _robust(l2) < _robust(L2PGD(steps=20)(scaled, x, y, budget=1.0, generator=_seed()))
    fgsm = FGSM(loss="margin")(scaled, x, y, budget=EPS, generator=_seed())
    assert _robust(fgsm) < _robust(FGSM()(scaled, x, y, budget=EPS, generator=_seed()))


def test_dlr_needs_three_classes_and_names_the_alternative(batch) -> None:
    x, y = batch
    binary = TorchTarget(
        nn.Linear(64, 2), input_spec=InputSpec(shape=(64,)), classes=["a", "b"], device="cpu"
    )
    with pytest.raises(ThreatError, match='loss = "margin"'):
        LinfPGD(steps=2, loss="dlr")(binary, x, y % 2, budget=EPS, generator=_seed())
    with pytest.raises(ValueError, match="loss must be one of"):
        LinfPGD(loss="hinge")  # type: ignore[arg-type]


def test_declared_preprocessing_gives_bpda_gradients(digits_mlp, batch) -> None:
    """The same deployed model two ways: quantisation inside the model file (gradient zero,
    PGD finds nothing beyond its random start) or declared as `quantize:L` in front of the
    classifier. Forward they agree exactly; with the declaration, PGD's gradient passes
    straight through the quantisation (BPDA) and finds what Square finds."""
    x, y = batch
    masked = _target(Quantised(digits_mlp, 17))
    declared = _target(digits_mlp, ("quantize:17",))
    assert torch.equal(masked.logits(x), declared.logits(x))
    assert bool(gradient_is_useless(masked, x, y, EPS).all())
    assert not bool(gradient_is_useless(declared, x, y, EPS).any())
    through_mask = _robust(LinfPGD(steps=20)(masked, x, y, budget=0.2, generator=_seed()))
    bpda = _robust(LinfPGD(steps=20)(declared, x, y, budget=0.2, generator=_seed()))
    square = _robust(
        LinfSquare(queries=300, p_init=0.8)(masked, x, y, budget=0.2, generator=_seed())
    )
    assert through_mask > square + 0.2, "the mask must fool plain PGD"
    assert bpda <= square + 0.05


def test_bit_depth_and_jpeg_steps_run_forward_exactly(digits_mlp) -> None:
    """bit-depth:B is quantize:2**B; jpeg runs on images and passes gradients through."""
    x = torch.rand(6, 64)
    assert torch.equal(
        _target(digits_mlp, ("bit-depth:3",)).logits(x),
        _target(digits_mlp, ("quantize:8",)).logits(x),
    )
    flat = nn.Sequential(nn.Flatten(), digits_mlp)
    spec = InputSpec(shape=(1, 8, 8), preprocessing=("jpeg:50",))
    jpeg = TorchTarget(flat, input_spec=spec, classes=DIGITS_CLASSES, device="cpu")
    images = x.view(6, 1, 8, 8).requires_grad_(True)
    out = jpeg.logits(images)
    (grad,) = torch.autograd.grad(out.sum(), images)
    assert float(grad.abs().sum()) > 0
    assert not torch.equal(out.detach(), flat(images.detach()))


def _config(preprocessing: str) -> str:
    return f"""
version = 1
[project]
name = "p"
[model]
name = "m"
kind = "torchscript"
path = "mlp.pt"
classes = {DIGITS_CLASSES}
preprocessing = [{preprocessing}]
[model.input]
shape = [64]
[data]
source = "digits"
"""


def test_model_preprocessing_reaches_the_target_from_the_config(tmp_path: Path, digits_mlp) -> None:
    path = tmp_path / "mlp.pt"
    torch.jit.trace(digits_mlp, torch.rand(1, 64)).save(str(path))
    config = parse_config(_config('"bit-depth:4"'), root=tmp_path)
    target = load_target(config.model, path)
    assert target.input_spec.preprocessing == ("bit-depth:4",)
    x = torch.rand(5, 64)
    assert torch.equal(target.logits(x), _target(digits_mlp, ("quantize:16",)).logits(x))


def test_ensemble_hands_zero_gradient_samples_to_square(digits_mlp, batch, caplog) -> None:
    """On an input-quantising model every sample's gradient is zero, so the ensemble spends
    nothing on APGD: it draws nothing from the generator before Square, and so returns
    exactly what Square alone returns, for a few extra passes (the gradient check)."""
    x, y = batch
    queries = 300
    alone_target, ensemble_target = (_target(Quantised(digits_mlp, 33)) for _ in range(2))
    alone = LinfSquare(queries=queries, p_init=0.8)(
        alone_target, x, y, budget=0.2, generator=_seed()
    )
    with caplog.at_level(logging.INFO, logger="hardenml.threats.ensemble"):
        ours = AutoAttackEnsemble(steps=100, square_queries=queries)(
            ensemble_target, x, y, budget=0.2, generator=_seed()
        )
    assert torch.equal(ours.success, alone.success)
    # The same adversarial examples (the ensemble keeps x where no stage succeeded), up to
    # float rounding: the ensemble's entry point projects Square's output again.
    flipped = alone.success & alone.clean_correct
    assert torch.allclose(ours.x_adv[flipped], alone.x_adv[flipped], atol=1e-6)
    stages = {r.component: r.attacked for r in caplog.records if hasattr(r, "component")}
    assert "LinfAPGDCE" not in stages and "LinfAPGDDLR" not in stages
    correct = int(alone.clean_correct.sum())
    assert stages["GradientCheck"] == stages["LinfSquare"] == correct
    # The ensemble's extra cost: its own clean and scoring passes and two gradient passes.
    assert ensemble_target.queries <= alone_target.queries + 4 * len(y)


def test_without_square_useless_gradients_stay_in_the_gradient_stages(
    digits_mlp, batch, caplog
) -> None:
    """No black-box stage to hand them to: the APGD stages still try them (their random
    starts are the only chance left), rather than leaving them unattacked."""
    x, y = batch
    target = _target(Quantised(digits_mlp, 33))
    with caplog.at_level(logging.INFO, logger="hardenml.threats.ensemble"):
        result = AutoAttackEnsemble(steps=3, targets=1, square_queries=0)(
            target, x, y, budget=0.2, generator=_seed()
        )
    stages = {r.component: r.attacked for r in caplog.records if hasattr(r, "component")}
    assert "GradientCheck" not in stages
    assert stages["LinfAPGDCE"] == int(result.clean_correct.sum())


def test_a_jpeg_step_on_flat_inputs_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_config('"jpeg:75"'), root=tmp_path)
    message = str(info.value)
    assert "model.preprocessing[0] (line 10)" in message and "image inputs" in message
    with pytest.raises(ConfigError, match=r"'quantize:N' with N \(levels\) an integer 2\.\.65536"):
        parse_config(_config('"bit-depth:4", "quantize:1"'), root=tmp_path)
    with pytest.raises(ConfigError, match="one of 'bit-depth:N'"):
        parse_config(_config('"blur:3"'), root=tmp_path)
