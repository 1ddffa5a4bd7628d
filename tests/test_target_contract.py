"""Contract suite over every registered target kind (`hardenml.targets`).

Each kind is built on the same task (scikit-learn's digits: 64 features in [0, 1], 10
classes) from a real model, loaded through the registry as a config would load it, and
held to the same checks: input spec and classes as declared, batch scores of the right
shape, queries counted, gradients exactly where declared, clear errors for bad inputs
and bad options, a stable identity. A kind registered without a builder here fails the
suite, so a new built-in kind cannot skip it.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
import torch
from safetensors.torch import save_file
from sklearn.linear_model import LogisticRegression
from tests.test_http_target import TOKEN, TOKEN_ENV, ModelServer
from tests.text_support import CLASSES as TEXT_CLASSES
from tests.text_support import WIDTH as TEXT_WIDTH
from tests.text_support import rt_split
from threadpoolctl import threadpool_limits
from torch import nn

from hardenml.config import ConfigError, ModelConfig
from hardenml.data import Dataset
from hardenml.targets import (
    TargetError,
    available_target_kinds,
    kind_options,
    load_target,
    model_identity,
    target_kind,
)
from hardenml.targets.chat_target import ChatKind
from hardenml.targets.text_target import TextTarget
from hardenml.text_train import texts_of, train_minilm_head, train_tfidf
from hardenml.threats import check_access
from hardenml.threats.pgd import LinfPGD

CLASSES = [str(d) for d in range(10)]
# Chat kinds answer conversations, not tensors: tests/test_chat_target.py holds their
# contract (replies, errors, identity); this suite covers every classifier kind.
CLASSIFIER_KINDS = [k for k in available_target_kinds() if not isinstance(target_kind(k), ChatKind)]

__all__ = ["rt_split"]  # a fixture
Built = tuple[ModelConfig, Path | None]
Builder = Callable[[Path, nn.Module, LogisticRegression, ExitStack], Built]


def _model(kind: str, path: Path | None, **extra: Any) -> ModelConfig:
    return ModelConfig.model_validate(
        {
            "name": f"digits-{kind}",
            "kind": kind,
            "path": path,
            "classes": CLASSES,
            "input": {"shape": [64], "bounds": [0.0, 1.0]},
            "device": "cpu",
            **extra,
        }
    )


def _pytorch(folder: Path, mlp: nn.Module, logreg: LogisticRegression, _: ExitStack) -> Built:
    path = folder / "mlp.safetensors"
    save_file({k: v.contiguous() for k, v in mlp.state_dict().items()}, str(path))
    kwargs = {"in_features": 64, "classes": 10, "hidden": 32}
    return _model("pytorch", path, factory="hardenml.zoo:mlp", factory_kwargs=kwargs), path


def _torchscript(folder: Path, mlp: nn.Module, logreg: LogisticRegression, _: ExitStack) -> Built:
    path = folder / "mlp.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates jit
        torch.jit.save(torch.jit.trace(copy.deepcopy(mlp).eval(), torch.zeros(1, 64)), str(path))
    return _model("torchscript", path), path


def _sklearn(folder: Path, mlp: nn.Module, logreg: LogisticRegression, _: ExitStack) -> Built:
    path = folder / "logreg.skops"
    sio.dump(logreg, path)
    return _model("sklearn", path), path


def _onnx(folder: Path, mlp: nn.Module, logreg: LogisticRegression, _: ExitStack) -> Built:
    from tests.test_onnx_target import export_sklearn

    path = export_sklearn(logreg, 64, folder / "logreg.onnx", zipmap=False)
    return _model("onnx", path), path


def _http(folder: Path, mlp: nn.Module, logreg: LogisticRegression, stack: ExitStack) -> Built:
    server = stack.enter_context(ModelServer(logreg))
    options = {"url": server.url, "token_env": TOKEN_ENV, "timeout": 5.0, "retries": 1}
    return _model("http", None, options=options), None


def _text_model(kind: str, path: Path) -> ModelConfig:
    return ModelConfig.model_validate(
        {
            "name": f"rt-{kind}",
            "kind": kind,
            "path": path,
            "classes": list(TEXT_CLASSES),
            "input": {"modality": "text", "shape": [TEXT_WIDTH]},
        }
    )


def _text_sklearn(folder: Path, rt_split: tuple[Dataset, Dataset]) -> Built:
    train, _ = rt_split
    target = train_tfidf(texts_of(train.x[:600]), train.y[:600], TEXT_CLASSES, max_chars=TEXT_WIDTH)
    path = folder / "tfidf.skops"
    target_kind("text-sklearn").save(target, path)
    return _text_model("text-sklearn", path), path


def _text_minilm(folder: Path, rt_split: tuple[Dataset, Dataset]) -> Built:
    train, _ = rt_split
    target = train_minilm_head(
        texts_of(train.x[:200]), train.y[:200], TEXT_CLASSES, max_chars=TEXT_WIDTH
    )
    path = folder / "head.safetensors"
    target_kind("text-minilm").save(target, path)
    return _text_model("text-minilm", path), path


# Kinds that read strings: their inputs are rows of code points, so the digits task above
# does not apply to them; they have their own builders and contract below.
TEXT_BUILDERS: dict[str, Callable[[Path, tuple[Dataset, Dataset]], Built]] = {
    "text-sklearn": _text_sklearn,
    "text-minilm": _text_minilm,
}
TENSOR_KINDS = [k for k in CLASSIFIER_KINDS if k not in TEXT_BUILDERS]

BUILDERS: dict[str, Builder] = {
    "pytorch": _pytorch,
    "torchscript": _torchscript,
    "sklearn": _sklearn,
    "onnx": _onnx,
    "http": _http,
}


@pytest.fixture(scope="module")
def logreg(digits: tuple[np.ndarray, ...]) -> LogisticRegression:
    with threadpool_limits(1):
        return LogisticRegression(max_iter=300).fit(digits[0], digits[1])


@contextmanager
def built(kind: str, folder: Path, mlp: nn.Module, logreg: LogisticRegression) -> Iterator[Built]:
    assert kind in BUILDERS, f"target kind {kind!r} has no contract builder in this suite"
    with ExitStack() as stack:
        yield BUILDERS[kind](folder, mlp, logreg, stack)


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


@pytest.mark.parametrize("kind", TENSOR_KINDS)
def test_every_kind_honours_the_target_contract(
    kind: str,
    tmp_path: Path,
    digits_mlp: nn.Module,
    logreg: LogisticRegression,
    digits: tuple[np.ndarray, ...],
) -> None:
    x = torch.from_numpy(digits[2][:7])
    with built(kind, tmp_path, digits_mlp, logreg) as (model, path):
        target = load_target(model, path)
        assert target.input_spec.shape == (64,) and target.classes == tuple(CLASSES)

        before = target.queries
        with torch.no_grad():
            scores = target.logits(x)
        assert scores.shape == (7, 10) and bool(torch.isfinite(scores).all())
        assert target.queries - before == 7, "every input sent is counted"
        predicted = target.predict(x)
        assert predicted.shape == (7,) and int(predicted.max()) < 10
        assert target.predict(x[:0]).shape == (0,)
        # The task is learnable and the kinds serve trained models: most digits are right.
        assert float((predicted.numpy() == digits[3][:7]).mean()) >= 4 / 7

        with pytest.raises(TargetError, match="shape"):
            target.logits(torch.zeros(2, 63))

        if target.has_gradients:
            probe = x.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(target.logits(probe).sum(), probe)
            assert bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0
            check_access(target, {"pgd": LinfPGD(steps=1)})
        else:
            with pytest.raises(TargetError, match="no input gradients"):
                target.require_gradients()
            with pytest.raises(TargetError, match="square"):
                check_access(target, {"pgd": LinfPGD(steps=1)})

        identity = model_identity(model, path)
        assert re.fullmatch(r"[0-9a-f]{64}", identity)
        assert model_identity(model, path) == identity


@pytest.mark.parametrize(
    "kind",
    [pytest.param(k, marks=pytest.mark.slow) if k == "text-minilm" else k for k in TEXT_BUILDERS],
)
def test_every_text_kind_honours_the_target_contract(
    kind: str, tmp_path: Path, rt_split: tuple[Dataset, Dataset]
) -> None:
    """The contract for kinds that read strings: spec and classes as declared, scores of the
    right shape for strings (empty ones too), queries counted, a clear error for inputs of
    the wrong width and for rows it cannot encode, no input gradients, only text threats,
    a model file written by `save` loading back the same scores, a stable identity. The
    gradient checks and the digits task of the tensor contract do not apply: strings are
    discrete."""
    _, test = rt_split
    model, path = TEXT_BUILDERS[kind](tmp_path, rt_split)
    target = load_target(model, path)
    assert isinstance(target, TextTarget)
    assert target.input_spec.modality == "text" and target.input_spec.shape == (TEXT_WIDTH,)
    assert target.classes == TEXT_CLASSES and not target.has_gradients
    x, y = torch.from_numpy(test.x[:40]), test.y[:40]
    before = target.queries
    scores = target.logits(x)
    assert scores.shape == (40, 2) and bool(torch.isfinite(scores).all())
    assert target.queries - before == 40
    assert float((target.predict(x).numpy() == y).mean()) >= 0.6, "a trained model"
    assert target.classify(["", "A masterpiece."]).shape == (2, 2)
    with pytest.raises(TargetError, match="shape"):
        target.logits(torch.zeros(2, TEXT_WIDTH - 1, dtype=torch.int32))
    with pytest.raises(TargetError, match="row 0 has 401 characters"):
        target.encode(["x" * (TEXT_WIDTH + 1)])
    with pytest.raises(TargetError, match="no input gradients"):
        target.require_gradients()
    with pytest.raises(TargetError, match="only text threats"):
        check_access(target, {"pgd": LinfPGD(steps=1)})
    saved = tmp_path / f"again{target_kind(kind).artifact_suffix}"
    target_kind(kind).save(target, saved)
    assert torch.allclose(load_target(model, saved).logits(x[:5]), scores[:5])
    identity = model_identity(model, path)
    assert re.fullmatch(r"[0-9a-f]{64}", identity) and model_identity(model, path) == identity


def test_every_kind_has_a_contract_builder() -> None:
    """Tensor kinds here, text kinds in TEXT_BUILDERS, chat kinds in tests/test_chat_target.py."""
    chat = [k for k in available_target_kinds() if k not in CLASSIFIER_KINDS]
    assert chat == ["chat"]
    assert sorted([*BUILDERS, *TEXT_BUILDERS, *chat]) == available_target_kinds()


@pytest.mark.parametrize("kind", available_target_kinds())
def test_every_kind_refuses_an_unknown_option_by_key(kind: str) -> None:
    extra = {"factory": "hardenml.zoo:mlp"} if kind == "pytorch" else {}
    model = _model(kind, None, options={"no_such_option": 1}, **extra)
    with pytest.raises(ConfigError, match=r"model\.options\.no_such_option"):
        kind_options(model)


@pytest.mark.parametrize("kind", [k for k in available_target_kinds() if target_kind(k).needs_file])
def test_every_file_kind_names_a_missing_file(kind: str, tmp_path: Path) -> None:
    missing = tmp_path / "missing.bin"
    extra = {"factory": "hardenml.zoo:mlp"} if kind == "pytorch" else {}
    with pytest.raises(TargetError, match="missing"):
        load_target(_model(kind, missing, **extra), missing)
