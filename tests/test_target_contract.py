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
from threadpoolctl import threadpool_limits
from torch import nn

from hardenml.config import ConfigError, ModelConfig
from hardenml.targets import (
    TargetError,
    available_target_kinds,
    kind_options,
    load_target,
    model_identity,
    target_kind,
)
from hardenml.targets.chat_target import ChatKind
from hardenml.threats import check_access
from hardenml.threats.pgd import LinfPGD

CLASSES = [str(d) for d in range(10)]
# Chat kinds answer conversations, not tensors: tests/test_chat_target.py holds their
# contract (replies, errors, identity); this suite covers every classifier kind.
CLASSIFIER_KINDS = [k for k in available_target_kinds() if not isinstance(target_kind(k), ChatKind)]
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


@pytest.mark.parametrize("kind", CLASSIFIER_KINDS)
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
