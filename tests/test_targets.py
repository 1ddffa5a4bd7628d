"""Targets: real models load safely; broken ones get explanations, not tracebacks."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pytest
import skops.io as sio
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from hardenml.config import ModelConfig
from hardenml.data import load_source
from hardenml.targets import InputSpec, SklearnTarget, TargetError, TorchTarget, load_target


def _model_cfg(**kw) -> ModelConfig:
    base = {
        "name": "m",
        "kind": "sklearn",
        "path": "m.skops",
        "classes": ["a", "b"],
        "input": {"shape": [30]},
    }
    return ModelConfig.model_validate({**base, **kw})


@pytest.fixture(scope="module")
def cancer() -> tuple[np.ndarray, np.ndarray]:
    ds = load_source("breast_cancer")
    x = ds.x.astype(np.float64)
    return x / x.max(axis=0), ds.y


def test_linear_surrogate_matches_predict_proba_exactly(cancer):
    x, y = cancer
    for clf in (
        LogisticRegression(max_iter=500),
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
    ):
        clf.fit(x, y)
        target = SklearnTarget(
            clf, input_spec=InputSpec(shape=(30,), bounds=(0, 1)), classes=["malignant", "benign"]
        )
        assert target.has_gradients
        probs = torch.softmax(target.logits(torch.tensor(x[:50], dtype=torch.float32)).double(), 1)
        np.testing.assert_allclose(probs.numpy(), clf.predict_proba(x[:50]), atol=1e-4)


def test_multiclass_surrogate_matches(digits):
    x_train, y_train, x_test, _ = digits
    clf = LogisticRegression(max_iter=2000).fit(x_train, y_train)
    target = SklearnTarget(
        clf, input_spec=InputSpec(shape=(64,)), classes=[str(i) for i in range(10)]
    )
    probs = torch.softmax(target.logits(torch.from_numpy(x_test[:40])).double(), 1).numpy()
    np.testing.assert_allclose(probs, clf.predict_proba(x_test[:40]), atol=1e-4)


def test_nonlinear_estimator_is_a_black_box(cancer):
    x, y = cancer
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y)
    target = SklearnTarget(
        forest, input_spec=InputSpec(shape=(30,), bounds=(0, 1)), classes=["malignant", "benign"]
    )
    assert not target.has_gradients
    with pytest.raises(TargetError, match="black-box"):
        target.check(torch.tensor(x[:4], dtype=torch.float32), need_gradients=True)
    assert target.predict(torch.tensor(x[:20], dtype=torch.float32)).shape == (20,)


def test_skops_loads_and_pickle_needs_trust(tmp_path: Path, cancer):
    x, y = cancer
    clf = LogisticRegression(max_iter=500).fit(x, y)
    sio.dump(clf, tmp_path / "m.skops")
    joblib.dump(clf, tmp_path / "m.joblib")
    target = load_target(_model_cfg(), tmp_path / "m.skops")
    assert (
        target.predict(torch.tensor(x[:5], dtype=torch.float32)).tolist()
        == clf.predict(x[:5]).tolist()
    )
    with pytest.raises(TargetError, match="--trust"):
        load_target(_model_cfg(path="m.joblib"), tmp_path / "m.joblib")
    trusted = load_target(_model_cfg(path="m.joblib"), tmp_path / "m.joblib", trust=True)
    assert trusted.has_gradients


def test_wrong_output_shape_is_explained(digits_mlp):
    target = TorchTarget(digits_mlp, input_spec=InputSpec(shape=(64,)), classes=["a", "b", "c"])
    with pytest.raises(TargetError, match=r"expected \(4, 3\).*model.classes"):
        target.logits(torch.zeros(4, 64))


def test_wrong_input_shape_is_explained(digits_mlp):
    target = TorchTarget(digits_mlp, input_spec=InputSpec(shape=(8, 8)), classes=list("0123456789"))
    with pytest.raises(TargetError, match=r"model\.input\.shape"):
        target.logits(torch.zeros(4, 64))


class NaNModel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 2), float("nan")) + 0 * x.sum()


class DetachedModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.layer(x)


def test_nan_outputs_are_explained():
    target = TorchTarget(NaNModel(), input_spec=InputSpec(shape=(4,)), classes=["a", "b"])
    with pytest.raises(TargetError, match="NaN or infinite outputs for 3 of 3"):
        target.logits(torch.zeros(3, 4))


def test_model_without_gradients_is_explained():
    target = TorchTarget(DetachedModel(), input_spec=InputSpec(shape=(4,)), classes=["a", "b"])
    with pytest.raises(TargetError, match="does not depend differentiably"):
        target.check(torch.zeros(3, 4), need_gradients=True)


def test_normalisation_is_applied_inside_the_target(digits_mlp):
    spec = InputSpec(shape=(64,), mean=(0.5,), std=(2.0,))
    target = TorchTarget(digits_mlp, input_spec=spec, classes=list("0123456789"))
    x = torch.rand(5, 64)
    with torch.no_grad():
        np.testing.assert_allclose(target.logits(x), digits_mlp((x - 0.5) / 2.0), atol=1e-6)


def test_pytorch_weights_must_fit_and_be_safetensors(tmp_path: Path, digits_weights: Path):
    cfg = ModelConfig.model_validate(
        {
            "name": "m",
            "kind": "pytorch",
            "factory": "hardenml.zoo:mlp",
            "factory_kwargs": {"in_features": 64, "classes": 10, "hidden": 16},
            "path": "w.safetensors",
            "classes": list("0123456789"),
            "input": {"shape": [64]},
        }
    )
    with pytest.raises(TargetError, match="do not fit the module"):
        load_target(cfg, digits_weights)
    pt = tmp_path / "w.pt"
    pt.write_bytes(b"not really")
    with pytest.raises(TargetError, match="safetensors"):
        load_target(cfg, pt)
    with pytest.raises(TargetError, match="does not exist"):
        load_target(cfg, tmp_path / "missing.safetensors")


def test_cnn_runs_channels_last_on_the_cpu_with_the_same_outputs() -> None:
    from hardenml.zoo import mnist_cnn

    torch.manual_seed(0)
    reference = mnist_cnn().eval()
    module = mnist_cnn()
    module.load_state_dict(reference.state_dict())
    spec = InputSpec(shape=(1, 28, 28))
    target = TorchTarget(module, input_spec=spec, classes=[str(i) for i in range(10)], device="cpu")
    assert target.memory_format is torch.channels_last
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(target.logits(x), reference(x), atol=1e-5)
    xg = x.clone().requires_grad_(True)
    grad = torch.autograd.grad(target.logits(xg).sum(), xg)[0]
    xr = x.clone().requires_grad_(True)
    expected = torch.autograd.grad(reference(xr).sum(), xr)[0]
    assert torch.allclose(grad, expected, atol=1e-5)
    # Flat inputs and explicit opt-outs keep the default layout.
    flat = TorchTarget(nn.Linear(4, 2), input_spec=InputSpec(shape=(4,)), classes=["a", "b"])
    assert flat.memory_format is torch.contiguous_format
    off = TorchTarget(
        mnist_cnn(), input_spec=spec, classes=[str(i) for i in range(10)], channels_last=False
    )
    assert off.memory_format is torch.contiguous_format


def _mlp_config(path: str, **extra: object) -> ModelConfig:
    return ModelConfig.model_validate(
        {
            "name": "m",
            "kind": "pytorch",
            "factory": "hardenml.zoo:mlp",
            "factory_kwargs": {"in_features": 64, "classes": 10, "hidden": 32},
            "path": path,
            "classes": list("0123456789"),
            "input": {"shape": [64]},
            **extra,
        }
    )


def test_a_pt_state_dict_loads_with_trust_and_weights_only(tmp_path: Path, digits_mlp) -> None:
    pt = tmp_path / "w.pt"
    torch.save({k: v.contiguous() for k, v in digits_mlp.state_dict().items()}, pt)
    with pytest.raises(TargetError, match="--trust"):
        load_target(_mlp_config("w.pt"), pt)
    target = load_target(_mlp_config("w.pt"), pt, trust=True)
    x = torch.rand(4, 64)
    with torch.no_grad():
        assert torch.allclose(target.logits(x), digits_mlp.eval()(x), atol=1e-5)
    # A pickled object that is not a state dict is refused, not run.
    torch.save({"weights": [1, 2, 3]}, tmp_path / "odd.pt")
    with pytest.raises(TargetError, match="not a state dict"):
        load_target(_mlp_config("odd.pt"), tmp_path / "odd.pt", trust=True)


def test_skops_types_can_be_trusted_by_name_without_blanket_trust(tmp_path: Path) -> None:
    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier

    x, y = np.random.default_rng(0).random((60, 4)), np.arange(60) % 2
    sio.dump(
        RandomForestClassifier(n_estimators=3, random_state=0).fit(x, y), tmp_path / "rf.skops"
    )
    base = {
        "name": "rf",
        "kind": "sklearn",
        "path": "rf.skops",
        "classes": ["a", "b"],
        "input": {"shape": [4]},
    }
    with pytest.raises(TargetError, match=r"model\.trusted_types") as refused:
        load_target(ModelConfig.model_validate(base), tmp_path / "rf.skops")
    untrusted = sio.get_untrusted_types(file=tmp_path / "rf.skops")
    assert all(t in str(refused.value) for t in untrusted)
    cfg = ModelConfig.model_validate({**base, "trusted_types": untrusted})
    target = load_target(cfg, tmp_path / "rf.skops")
    assert target.predict(torch.from_numpy(x).float()).shape == (60,)


def test_a_factory_module_beside_the_config_needs_no_pythonpath(
    tmp_path: Path, digits_weights: Path
) -> None:
    import sys

    from tests.workspace import write_workspace

    from hardenml.workflow import Workspace

    config = write_workspace(tmp_path / "ws", digits_weights)
    (tmp_path / "ws" / "my_models.py").write_text(
        "from hardenml.zoo import mlp\n\n\ndef build(**kw):\n    return mlp(**kw)\n"
    )
    text = config.read_text().replace('"hardenml.zoo:mlp"', '"my_models:build"')
    config.write_text(text)
    try:
        ws = Workspace.open(config)
        assert ws.load_target().predict(torch.rand(3, 64)).shape == (3,)
    finally:
        sys.path[:] = [p for p in sys.path if p != str((tmp_path / "ws").resolve())]
        sys.modules.pop("my_models", None)
