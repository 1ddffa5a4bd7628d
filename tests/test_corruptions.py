"""Image corruptions: severity orders the damage, bounds hold, seeds reproduce."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from conftest import DIGITS_CLASSES
from hardenml.targets import InputSpec, TorchTarget
from hardenml.threats import ThreatError
from hardenml.threats.corruptions import (
    Brightness,
    Contrast,
    Corruption,
    GaussianBlur,
    GaussianNoise,
    JPEGCompression,
    Rotation,
    Shift,
    ShotNoise,
)

ALL = [
    GaussianNoise,
    ShotNoise,
    GaussianBlur,
    Brightness,
    Contrast,
    JPEGCompression,
    Rotation,
    Shift,
]
SPATIAL = [GaussianBlur, JPEGCompression, Rotation, Shift]


def _images_target(module: nn.Module, **spec: object) -> TorchTarget:
    return TorchTarget(
        module,
        input_spec=InputSpec(shape=(1, 8, 8), **spec),  # type: ignore[arg-type]
        classes=DIGITS_CLASSES,
        device="cpu",
    )


@pytest.fixture(scope="module")
def images(digits: tuple[np.ndarray, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    _, _, x_test, y_test = digits
    return torch.from_numpy(x_test[:64]).reshape(-1, 1, 8, 8), torch.from_numpy(y_test[:64])


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_damage_grows_with_severity_and_stays_in_bounds(
    cls: type[Corruption], digits_mlp: nn.Module, images: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = images
    damage = []
    for severity in range(1, 6):
        target = _images_target(digits_mlp)
        result = cls()(target, x, y, budget=severity, generator=_gen())
        assert result.x_adv.shape == x.shape and result.norm == "none"
        assert float(result.x_adv.min()) >= 0.0 and float(result.x_adv.max()) <= 1.0
        damage.append(float((result.x_adv - x).abs().mean()))
    assert damage[0] > 0
    assert all(a < b for a, b in itertools.pairwise(damage)), f"{cls.__name__}: {damage}"


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_severity_is_an_integer_from_one_to_five(
    cls: type[Corruption], digits_mlp: nn.Module, images: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = images
    target = _images_target(digits_mlp)
    for bad in (0.5, 2.5, 6, 10):
        with pytest.raises(ThreatError, match="severity"):
            cls()(target, x, y, budget=bad, generator=_gen())
    unchanged = cls()(target, x, y, budget=0, generator=_gen())
    assert torch.equal(unchanged.x_adv, x)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_same_seed_same_corruption(
    cls: type[Corruption], digits_mlp: nn.Module, images: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = images
    runs = [cls()(_images_target(digits_mlp), x, y, budget=3, generator=_gen(5)) for _ in "ab"]
    assert torch.equal(runs[0].x_adv, runs[1].x_adv)
    assert torch.equal(runs[0].success, runs[1].success)


@pytest.mark.parametrize(
    "cls", [GaussianNoise, ShotNoise, Rotation, Shift], ids=lambda c: c.__name__
)
def test_random_corruptions_draw_from_the_generator(
    cls: type[Corruption], digits_mlp: nn.Module, images: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = images
    target = _images_target(digits_mlp)
    a = cls().run(target, x, y, 3, _gen(1))
    b = cls().run(target, x, y, 3, _gen(2))
    assert not torch.equal(a, b)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_scaled_bounds_give_the_same_corruption(
    cls: type[Corruption], digits_mlp: nn.Module, images: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """On 0..255 pixels, a corruption is the [0, 1] corruption scaled by 255."""
    x, y = images
    unit = cls().run(_images_target(digits_mlp), x, y, 4, _gen(3))
    wide = _images_target(digits_mlp, bounds=(0.0, 255.0), mean=(0.0,), std=(255.0,))
    scaled = cls().run(wide, x * 255, y, 4, _gen(3))
    assert torch.allclose(scaled, unit * 255, atol=1e-2)


@pytest.mark.parametrize("cls", SPATIAL, ids=lambda c: c.__name__)
def test_spatial_corruptions_need_images(
    cls: type[Corruption], digits_target: TorchTarget, images: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = images
    with pytest.raises(ThreatError, match=r"\(c, h, w\)"):
        cls()(digits_target, x.reshape(-1, 64), y, budget=1, generator=_gen())


def test_pixelwise_corruptions_work_on_flat_inputs(
    digits_target: TorchTarget, images: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = images
    flat = x.reshape(-1, 64)
    for cls in (GaussianNoise, ShotNoise, Brightness, Contrast):
        out = cls().run(digits_target, flat, y, 2, _gen())
        assert out.shape == flat.shape and not torch.equal(out, flat)


def _rgb_target() -> TorchTarget:
    module = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    return TorchTarget(
        module, input_spec=InputSpec(shape=(3, 8, 8)), classes=DIGITS_CLASSES, device="cpu"
    )


def test_brightness_keeps_hue_on_colour_images() -> None:
    x = 0.1 + 0.5 * torch.rand(4, 3, 8, 8, generator=_gen(0))
    out = Brightness().run(_rgb_target(), x, torch.zeros(4, dtype=torch.long), 2, _gen())
    # Raising the HSV value scales a pixel's channels together: their ratios hold.
    assert torch.allclose(out[:, 0] / out[:, 1], x[:, 0] / x[:, 1], rtol=1e-4)
    assert torch.allclose(out.amax(dim=1), x.amax(dim=1) + 0.1, atol=1e-6)


def test_jpeg_handles_colour_images() -> None:
    x = torch.rand(3, 3, 8, 8, generator=_gen(0))
    mild = JPEGCompression().run(_rgb_target(), x, torch.zeros(3, dtype=torch.long), 1, _gen())
    harsh = JPEGCompression().run(_rgb_target(), x, torch.zeros(3, dtype=torch.long), 5, _gen())
    assert mild.shape == x.shape
    assert 0 < float((mild - x).abs().mean()) < float((harsh - x).abs().mean())


def test_blur_keeps_a_flat_image_flat() -> None:
    x = torch.full((2, 1, 8, 8), 0.3)
    target = TorchTarget(
        nn.Sequential(nn.Flatten(), nn.Linear(64, 10)),
        input_spec=InputSpec(shape=(1, 8, 8)),
        classes=DIGITS_CLASSES,
        device="cpu",
    )
    for severity in range(1, 6):
        out = GaussianBlur().run(target, x, torch.zeros(2, dtype=torch.long), severity, _gen())
        assert torch.allclose(out, x, atol=1e-6)
