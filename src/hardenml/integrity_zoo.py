"""The calibration zoo of the evaluation-integrity checks: honest and masked models, seeded.

An integrity check is only worth something if it stays silent on honest models (else
users switch it off) and speaks on every model that defeats gradient attacks. This
module builds both kinds from scratch, on the bundled data, so that `bench/integrity.py`
can measure each check's false-positive rate and catches, and the tests can hold them:

- honest: logistic regression (through the scikit-learn target's exact linear copy),
  ReLU perceptrons on digits and on standardised breast-cancer features (trained long,
  so most of its outputs are saturated), CNNs with ReLU and max-pool on 8x8 digits and on
  MNIST-5k, normally and adversarially trained (a few epochs of PGD-AT, Madry et al.
  2018), with inputs in [0, 1], in [0, 255], and normalised inside the model;
- masked: the same classifiers behind the defences of `hardenml.zoo` that the literature
  names (Athalye et al. 2018; Tramer et al. 2020): input quantisation, JPEG-like
  compression, logits scaled by a large constant, a saturated softmax output, fresh input
  noise on every call, and a preprocessing with shattered gradients.

`ZooSize` says how much to train: `TEST` builds the digits and breast-cancer models only
(seconds), `BENCH` adds MNIST-5k (minutes on two cores). The same size and seed give the
same models. Nothing is saved: the models are small enough to rebuild.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hardenml.data import load_source, split
from hardenml.patch.adversarial import linf_pgd
from hardenml.targets import InputSpec, SklearnTarget, Target, TorchTarget
from hardenml.targets.torch_target import Normalize
from hardenml.train import set_seed, train_classifier
from hardenml.zoo import (
    BlockDCTQuantised,
    NoisyInput,
    QuantisedInput,
    SaturatedSoftmax,
    ScaledLogits,
    SineWarp,
    digits_cnn,
    mlp,
    mnist_cnn,
)

DIGITS = tuple(str(i) for i in range(10))
CANCER = ("malignant", "benign")
# L-inf budgets the zoo is evaluated (and adversarially trained) at, where its honest
# models keep some but not all of their accuracy, so that attacks disagree at the margin:
# 0.1 on 8x8 digits in [0, 1], 0.2 on MNIST pixels in [0, 1] (scaled with the range for
# [0, 255]), a quarter of a standard deviation on breast-cancer features.
DIGITS_BUDGET = 0.1
MNIST_BUDGET = 0.2
CANCER_BUDGET = 0.25
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass(frozen=True)
class ZooSize:
    """How much data and training the zoo spends; `mnist_train` 0 leaves MNIST out."""

    mnist_train: int
    mnist_epochs: int
    adversarial_epochs: int
    samples: int


TEST = ZooSize(mnist_train=0, mnist_epochs=0, adversarial_epochs=6, samples=60)
BENCH = ZooSize(mnist_train=4000, mnist_epochs=3, adversarial_epochs=3, samples=100)


@dataclass(frozen=True)
class ZooModel:
    """One model of the zoo with the samples and the L-inf budget it is checked at."""

    name: str
    masked: bool
    description: str
    target: Target
    x: Tensor
    y: Tensor
    budget: float


def _pgd_at_loss(eps: float, steps: int) -> Callable[[nn.Module, Tensor, Tensor], Tensor]:
    """Madry et al.'s training loss: cross-entropy on L-inf PGD examples at `eps`, with a
    seeded random start (the generator is drawn from torch's global one, seeded by
    `train_classifier`)."""

    def loss(net: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        net.eval()
        start = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,))))
        adv = linf_pgd(
            net,
            x,
            y,
            eps=eps,
            step_size=2.5 * eps / steps,
            steps=steps,
            bounds=(0.0, 1.0),
            generator=start,
        )
        net.train()
        return F.cross_entropy(net(adv), y)

    return loss


def _fit(
    factory: Callable[[], nn.Module], x: np.ndarray, y: np.ndarray, *, epochs: int, seed: int
) -> nn.Module:
    """Build the module after seeding (its initial weights come from torch's global
    generator), then train it."""
    set_seed(seed)
    return train_classifier(factory(), x, y, epochs=epochs, seed=seed)


def _adversarial(
    base: nn.Module, x: np.ndarray, y: np.ndarray, *, eps: float, epochs: int, seed: int
) -> nn.Module:
    """PGD-AT at `eps` (7 steps), fine-tuned from `base`'s weights."""
    return train_classifier(
        copy.deepcopy(base), x, y, epochs=epochs, seed=seed, loss_fn=_pgd_at_loss(eps, steps=7)
    )


class Bases:
    """The honest classifiers the zoo is made of, each trained on first use."""

    def __init__(self, size: ZooSize, *, seed: int = 0) -> None:
        self.size = size
        self.seed = seed

    @cached_property
    def digits(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """scikit-learn's 8x8 digits in [0, 1], flat: (x_train, y_train, x_test, y_test)."""
        train, test = split(load_source("digits"), test_fraction=0.25, seed=0)
        return train.x, train.y, test.x, test.y

    @cached_property
    def cancer(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]:
        """Breast-cancer features standardised on the training split, and bounds that hold
        every sample (the range rounded out to half a standard deviation)."""
        train, test = split(load_source("breast_cancer"), test_fraction=0.2, seed=0)
        mean, std = train.x.mean(axis=0), train.x.std(axis=0)
        x_train = ((train.x - mean) / std).astype(np.float32)
        x_test = ((test.x - mean) / std).astype(np.float32)
        both = np.concatenate([x_train, x_test])
        bounds = (float(np.floor(both.min() * 2) / 2), float(np.ceil(both.max() * 2) / 2))
        return x_train, train.y, x_test, test.y, bounds

    @cached_property
    def mnist(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        train, test = split(load_source("mnist5k"), test_fraction=0.2, seed=0)
        keep = self.size.mnist_train
        return train.x[:keep], train.y[:keep], test.x, test.y

    def _digit_images(self) -> tuple[np.ndarray, np.ndarray]:
        x_train, y_train, _, _ = self.digits
        return x_train.reshape(-1, 1, 8, 8), y_train

    @cached_property
    def logreg_digits(self) -> object:
        from sklearn.linear_model import LogisticRegression

        x_train, y_train, _, _ = self.digits
        return LogisticRegression(max_iter=2000).fit(x_train, y_train)

    @cached_property
    def logreg_cancer(self) -> object:
        from sklearn.linear_model import LogisticRegression

        x_train, y_train, _, _, _ = self.cancer
        return LogisticRegression(max_iter=2000).fit(x_train, y_train)

    @cached_property
    def mlp_digits(self) -> nn.Module:
        x_train, y_train, _, _ = self.digits
        return _fit(lambda: mlp(64, 10, hidden=32), x_train, y_train, epochs=15, seed=self.seed)

    @cached_property
    def mlp_cancer(self) -> nn.Module:
        # Trained long: most training and test samples end with saturated softmax outputs,
        # where cross-entropy gradients are tiny and point anywhere (issue 10's false alarm).
        x_train, y_train, _, _, _ = self.cancer
        return _fit(lambda: mlp(30, 2, hidden=64), x_train, y_train, epochs=200, seed=self.seed + 1)

    @cached_property
    def cnn_digits(self) -> nn.Module:
        x_train, y_train = self._digit_images()
        return _fit(digits_cnn, x_train, y_train, epochs=30, seed=self.seed + 2)

    @cached_property
    def cnn_digits_pgdat(self) -> nn.Module:
        x_train, y_train = self._digit_images()
        return _adversarial(
            self.cnn_digits,
            x_train,
            y_train,
            eps=DIGITS_BUDGET,
            epochs=self.size.adversarial_epochs,
            seed=self.seed + 3,
        )

    @cached_property
    def cnn_mnist(self) -> nn.Module:
        x_train, y_train, _, _ = self.mnist
        return _fit(mnist_cnn, x_train, y_train, epochs=self.size.mnist_epochs, seed=self.seed)

    @cached_property
    def cnn_mnist_normalised(self) -> nn.Module:
        """A CNN whose first layer normalises its input: trained through it, so the attack
        and the checks see pixels in [0, 1] while the convolutions see z-scores."""
        x_train, y_train, _, _ = self.mnist

        def normalised() -> nn.Module:
            return nn.Sequential(
                Normalize(torch.tensor(MNIST_MEAN), torch.tensor(MNIST_STD)), mnist_cnn()
            )

        return _fit(normalised, x_train, y_train, epochs=self.size.mnist_epochs, seed=self.seed + 4)

    @cached_property
    def cnn_mnist_pgdat(self) -> nn.Module:
        x_train, y_train, _, _ = self.mnist
        return _adversarial(
            self.cnn_mnist,
            x_train,
            y_train,
            eps=MNIST_BUDGET,
            epochs=self.size.adversarial_epochs,
            seed=self.seed + 5,
        )


def _torch(
    name: str,
    module: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    samples: int,
    masked: bool,
    description: str,
    classes: tuple[str, ...] = DIGITS,
    bounds: tuple[float, float] = (0.0, 1.0),
    budget: float = DIGITS_BUDGET,
) -> ZooModel:
    # A copy per entry: the target freezes and re-lays out its module in place.
    target = TorchTarget(
        copy.deepcopy(module),
        input_spec=InputSpec(shape=tuple(x.shape[1:]), bounds=bounds),
        classes=classes,
        device="cpu",
    )
    return ZooModel(
        name,
        masked,
        description,
        target,
        torch.from_numpy(np.ascontiguousarray(x[:samples])),
        torch.from_numpy(y[:samples]),
        budget,
    )


def _scaled_255(module: nn.Module) -> nn.Module:
    """The same classifier for pixels in [0, 255]: it divides by 255 first."""
    return nn.Sequential(Normalize(torch.tensor(0.0), torch.tensor(255.0)), module)


# Builds a zoo entry, under the name it is registered as.
Builder = Callable[[Bases, str], ZooModel]


def _digits(
    module: Callable[[Bases], nn.Module], masked: bool, what: str, *, images: bool = False
) -> Builder:
    """Digits flat (64 features) or as 1x8x8 `images`, at the digits budget."""

    def build(bases: Bases, name: str) -> ZooModel:
        _, _, x_test, y_test = bases.digits
        return _torch(
            name,
            module(bases),
            x_test.reshape(-1, 1, 8, 8) if images else x_test,
            y_test,
            samples=bases.size.samples,
            masked=masked,
            description=what,
        )

    return build


def _cancer(module: Callable[[Bases], nn.Module], masked: bool, what: str) -> Builder:
    def build(bases: Bases, name: str) -> ZooModel:
        _, _, x_test, y_test, bounds = bases.cancer
        return _torch(
            name,
            module(bases),
            x_test,
            y_test,
            samples=bases.size.samples,
            masked=masked,
            description=what,
            classes=CANCER,
            bounds=bounds,
            budget=CANCER_BUDGET,
        )

    return build


def _mnist(
    module: Callable[[Bases], nn.Module],
    masked: bool,
    what: str,
    *,
    pixels_255: bool = False,
) -> Builder:
    def build(bases: Bases, name: str) -> ZooModel:
        _, _, x_test, y_test = bases.mnist
        scale = 255.0 if pixels_255 else 1.0
        return _torch(
            name,
            _scaled_255(module(bases)) if pixels_255 else module(bases),
            x_test * np.float32(scale),
            y_test,
            samples=bases.size.samples,
            masked=masked,
            description=what,
            bounds=(0.0, scale),
            budget=MNIST_BUDGET * scale,
        )

    return build


def _sklearn(which: str, what: str) -> Builder:
    def build(bases: Bases, name: str) -> ZooModel:
        if which == "digits":
            _, _, x_test, y_test = bases.digits
            estimator, classes, bounds, budget = bases.logreg_digits, DIGITS, (0.0, 1.0), 0.05
        else:
            _, _, x_test, y_test, bounds = bases.cancer
            estimator, classes, budget = bases.logreg_cancer, CANCER, CANCER_BUDGET
        target = SklearnTarget(
            estimator,
            input_spec=InputSpec(shape=(x_test.shape[1],), bounds=bounds),
            classes=classes,
        )
        samples = bases.size.samples
        return ZooModel(
            name,
            False,
            what,
            target,
            torch.from_numpy(x_test[:samples]),
            torch.from_numpy(y_test[:samples]),
            budget,
        )

    return build


# Name -> builder, in the order the bench reports them. The `cnn-mnist*` entries need
# MNIST-5k (`ZooSize.mnist_train` > 0).
ZOO: dict[str, Builder] = {
    "logreg-digits": _sklearn("digits", "logistic regression, digits in [0, 1]"),
    "logreg-cancer": _sklearn("cancer", "logistic regression, standardised breast-cancer features"),
    "mlp-digits": _digits(lambda b: b.mlp_digits, False, "ReLU MLP, digits in [0, 1]"),
    "mlp-cancer": _cancer(
        lambda b: b.mlp_cancer,
        False,
        "ReLU MLP trained 200 epochs (saturated outputs), standardised breast cancer",
    ),
    "cnn-digits": _digits(
        lambda b: b.cnn_digits, False, "CNN (ReLU, max-pool), 8x8 digits", images=True
    ),
    "cnn-digits-pgdat": _digits(
        lambda b: b.cnn_digits_pgdat,
        False,
        "the digits CNN after PGD-AT at 0.1",
        images=True,
    ),
    "cnn-mnist": _mnist(lambda b: b.cnn_mnist, False, "CNN, MNIST in [0, 1]"),
    "cnn-mnist-255": _mnist(
        lambda b: b.cnn_mnist,
        False,
        "the MNIST CNN on pixels in [0, 255] (divides by 255 first)",
        pixels_255=True,
    ),
    "cnn-mnist-normalised": _mnist(
        lambda b: b.cnn_mnist_normalised,
        False,
        "CNN trained through its own input normalisation, MNIST in [0, 1]",
    ),
    "cnn-mnist-pgdat": _mnist(
        lambda b: b.cnn_mnist_pgdat, False, "the MNIST CNN after PGD-AT at 0.2"
    ),
    "cnn-mnist-pgdat-255": _mnist(
        lambda b: b.cnn_mnist_pgdat,
        False,
        "the PGD-AT MNIST CNN on pixels in [0, 255]",
        pixels_255=True,
    ),
    # Masked.
    "quantised-cnn-digits": _digits(
        lambda b: QuantisedInput(b.cnn_digits, levels=8),
        True,
        "input rounded to 8 levels (3-bit depth) before the digits CNN",
        images=True,
    ),
    "jpeg-cnn-digits": _digits(
        lambda b: BlockDCTQuantised(b.cnn_digits, step=0.1),
        True,
        "JPEG-like block-DCT rounding before the digits CNN",
        images=True,
    ),
    "scaled-logits-mlp-digits": _digits(
        lambda b: ScaledLogits(b.mlp_digits, scale=1000.0),
        True,
        "the digits MLP with logits times 1,000",
    ),
    "noisy-mlp-digits": _digits(
        lambda b: NoisyInput(b.mlp_digits, std=0.1),
        True,
        "fresh Gaussian input noise (std 0.1) on every call, digits MLP",
    ),
    "sine-warp-mlp-digits": _digits(
        lambda b: SineWarp(b.mlp_digits),
        True,
        "x + 0.05 sin(1000 x) before the digits MLP (shattered gradients)",
    ),
    "saturated-softmax-mlp-cancer": _cancer(
        lambda b: SaturatedSoftmax(b.mlp_cancer),
        True,
        "the breast-cancer MLP returning softmax(logits / 0.01)",
    ),
    "quantised-cnn-mnist-pgdat": _mnist(
        lambda b: QuantisedInput(b.cnn_mnist_pgdat, levels=8),
        True,
        "input rounded to 8 levels before the PGD-AT MNIST CNN",
    ),
    "jpeg-cnn-mnist": _mnist(
        lambda b: BlockDCTQuantised(b.cnn_mnist, step=0.1),
        True,
        "JPEG-like block-DCT rounding before the MNIST CNN",
    ),
    "scaled-logits-cnn-mnist-pgdat": _mnist(
        lambda b: ScaledLogits(b.cnn_mnist_pgdat, scale=1000.0),
        True,
        "the PGD-AT MNIST CNN with logits times 1,000",
    ),
    "saturated-softmax-cnn-mnist": _mnist(
        lambda b: SaturatedSoftmax(b.cnn_mnist),
        True,
        "the MNIST CNN returning softmax(logits / 0.01)",
    ),
    "noisy-cnn-mnist-pgdat": _mnist(
        lambda b: NoisyInput(b.cnn_mnist_pgdat, std=0.1),
        True,
        "fresh Gaussian input noise (std 0.1) on every call, PGD-AT MNIST CNN",
    ),
    "sine-warp-cnn-mnist": _mnist(
        lambda b: SineWarp(b.cnn_mnist),
        True,
        "x + 0.05 sin(1000 x) before the MNIST CNN (shattered gradients)",
    ),
}


def names(size: ZooSize) -> list[str]:
    """The zoo's models at `size`, honest first, in the bench's order."""
    return [n for n in ZOO if size.mnist_train > 0 or "mnist" not in n]


def build(name: str, bases: Bases) -> ZooModel:
    return ZOO[name](bases, name)
