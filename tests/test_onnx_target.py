"""ONNX target: exports of a real scikit-learn and a real PyTorch model, scored through
onnxruntime, checked against the originals and run through `hardenml scan` and `gate`."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skl2onnx
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn
from typer.testing import CliRunner

from hardenml.cli import app
from hardenml.config import ConfigError, DataConfig, ModelConfig
from hardenml.data import prepare
from hardenml.ledger import Ledger
from hardenml.targets import Target, TargetError, load_target
from workspace import nan_model

DIGITS_CLASSES = [str(i) for i in range(10)]
IMAGE = (1, 8, 8)
runner = CliRunner()


def run(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def says(result: Any, *phrases: str) -> bool:
    """Whether the command's output holds every phrase, whatever rich's line wrapping did
    (it breaks long paths mid-word, so whitespace is ignored on both sides)."""
    output = "".join(result.output.split())
    return all("".join(phrase.split()) in output for phrase in phrases)


def export_torch(
    module: nn.Module,
    path: Path,
    *,
    batch: int | None = None,
    outputs: tuple[str, ...] = ("logits",),
) -> Path:
    """`torch.onnx.export` with the TorchScript exporter (needs only `onnx`); `batch`
    fixes the batch dimension, None leaves it dynamic."""
    sample = torch.zeros(batch or 1, *IMAGE)
    dynamic = None if batch else {name: {0: "batch"} for name in ("pixels", *outputs)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            module.eval(),
            (sample,),
            str(path),
            dynamo=False,
            input_names=["pixels"],
            output_names=list(outputs),
            dynamic_axes=dynamic,
        )
    return path


def export_sklearn(estimator: Any, n_features: int, path: Path, *, zipmap: bool) -> Path:
    options = None if zipmap else {id(estimator): {"zipmap": False}}
    onx = skl2onnx.to_onnx(estimator, np.zeros((1, n_features), np.float32), options=options)
    path.write_bytes(onx.SerializeToString())
    return path


def onnx_model(path: Path, classes: list[str], shape: tuple[int, ...], **options: Any) -> Target:
    config = ModelConfig(
        name="m",
        kind="onnx",
        path=path,
        classes=classes,
        input={"shape": list(shape)},
        options=options,
    )
    return load_target(config, path)


@pytest.fixture(scope="module")
def image_mlp(digits_mlp: nn.Module) -> nn.Module:
    """The session's digits MLP taking 1x8x8 images, as a model exported for images is."""
    return nn.Sequential(nn.Flatten(), digits_mlp).eval()


@pytest.fixture(scope="module")
def digits_images(digits: tuple[np.ndarray, ...]) -> torch.Tensor:
    return torch.from_numpy(digits[2][:60]).reshape(-1, *IMAGE)


@pytest.fixture(scope="module")
def torch_onnx(tmp_path_factory: pytest.TempPathFactory, image_mlp: nn.Module) -> Path:
    return export_torch(image_mlp, tmp_path_factory.mktemp("torch") / "digits.onnx")


@pytest.fixture(scope="module")
def cancer() -> tuple[Any, Any]:
    """breast_cancer as `data.source = "breast_cancer"`, `scale = "minmax"` prepares it."""
    cfg = DataConfig(source="breast_cancer", scale="minmax", test_fraction=0.2, seed=0)
    return prepare(cfg, root=Path("."))


@pytest.fixture(scope="module")
def cancer_model(cancer: tuple[Any, Any]) -> LogisticRegression:
    train, _ = cancer
    return LogisticRegression(C=10.0, max_iter=2000).fit(train.x, train.y)


def test_torch_export_scores_match_the_module(
    torch_onnx: Path, image_mlp: nn.Module, digits_images: torch.Tensor
):
    target = onnx_model(torch_onnx, DIGITS_CLASSES, IMAGE)
    assert not target.has_gradients and target.classes == tuple(DIGITS_CLASSES)
    scores = target.logits(digits_images)
    with torch.no_grad():
        expected = image_mlp(digits_images)
    assert scores.shape == (60, 10) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(scores.softmax(1), expected.softmax(1), atol=1e-5, rtol=0)
    assert target.queries == 60


@pytest.mark.parametrize("zipmap", [False, True], ids=["tensor", "zipmap"])
def test_sklearn_export_probabilities_match_predict_proba(
    tmp_path: Path, cancer: tuple[Any, Any], cancer_model: LogisticRegression, zipmap: bool
):
    _, test = cancer
    path = export_sklearn(cancer_model, test.x.shape[1], tmp_path / "lr.onnx", zipmap=zipmap)
    target = onnx_model(path, ["malignant", "benign"], (test.x.shape[1],))
    x = torch.from_numpy(test.x)
    proba = target.logits(x).softmax(1).double().numpy()
    np.testing.assert_allclose(proba, cancer_model.predict_proba(test.x), atol=1e-5)
    assert (target.predict(x).numpy() == cancer_model.predict(test.x)).all()


def test_chunks_and_fixed_batch_dimensions_give_the_same_scores(
    tmp_path: Path, image_mlp: nn.Module, torch_onnx: Path, digits_images: torch.Tensor
):
    x = digits_images[:10]
    reference = onnx_model(torch_onnx, DIGITS_CLASSES, IMAGE).logits(x)
    chunked = onnx_model(torch_onnx, DIGITS_CLASSES, IMAGE, batch_size=3)
    torch.testing.assert_close(chunked.logits(x), reference)
    # Exported with a fixed batch of 1 (one row per call) and of 4 (the last call padded).
    for batch in (1, 4):
        fixed = export_torch(image_mlp, tmp_path / f"fixed{batch}.onnx", batch=batch)
        target = onnx_model(fixed, DIGITS_CLASSES, IMAGE)
        torch.testing.assert_close(target.logits(x), reference, atol=1e-6, rtol=1e-6)
        assert target.queries == 10


def test_gradient_threats_are_refused_with_the_ones_that_apply(
    torch_onnx: Path, digits_images: torch.Tensor
):
    from hardenml.threats import check_access
    from hardenml.threats.pgd import LinfPGD
    from hardenml.threats.square import LinfSquare

    target = onnx_model(torch_onnx, DIGITS_CLASSES, IMAGE)
    with pytest.raises(TargetError) as at_target:
        target.check(digits_images, need_gradients=True)
    assert "digits.onnx" in str(at_target.value)
    assert "no input gradients" in str(at_target.value)
    declared = {"pgd-linf": LinfPGD(steps=2), "sq": LinfSquare(queries=10)}
    with pytest.raises(TargetError) as refused:
        check_access(target, declared)
    message = str(refused.value)
    assert "digits.onnx" in message and "no input gradients" in message
    gradient, applicable = message.split("Threats that need only scores or labels")
    assert "pgd-linf" in gradient and "'sq'" not in gradient
    for name in ("square", "square-l2", "hopskipjump", "tabular-blackbox", "gaussian-noise"):
        assert name in applicable
    assert "pgd," not in applicable
    target.check(digits_images)  # a forward-only preflight is fine


def test_load_errors_name_the_problem(
    tmp_path: Path, torch_onnx: Path, cancer_model: LogisticRegression
):
    def error(path: Path, classes: list[str], shape: tuple[int, ...], **options: Any) -> str:
        with pytest.raises(TargetError) as raised:
            onnx_model(path, classes, shape, **options)
        return str(raised.value)

    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"PK\x03\x04 this is a zip file, not a protobuf")
    assert "corrupt.onnx is not a readable ONNX model" in error(corrupt, DIGITS_CLASSES, IMAGE)
    message = error(torch_onnx, DIGITS_CLASSES, (64,))
    assert "model.input.shape is [64]" in message and "[1, 8, 8]" in message
    assert "model.input.shape" in error(torch_onnx, DIGITS_CLASSES, (1, 8, 9))
    message = error(torch_onnx, ["a", "b", "c"], IMAGE)
    assert "'logits'" in message and "3 classes" in message
    message = error(torch_onnx, DIGITS_CLASSES, IMAGE, output="probabilities")
    assert "no output 'probabilities'" in message and "'logits'" in message
    assert "FooExecutionProvider" in error(
        torch_onnx, DIGITS_CLASSES, IMAGE, providers=["FooExecutionProvider"]
    )
    labels = export_sklearn(cancer_model, 30, tmp_path / "lr.onnx", zipmap=False)
    assert "tensor(int64)" in error(labels, ["a", "b"], (30,), output="label")
    with pytest.raises(ConfigError) as bad_option:
        onnx_model(torch_onnx, DIGITS_CLASSES, IMAGE, batchsize=8)
    assert "model.options.batchsize" in str(bad_option.value)


def test_scoring_errors_name_the_problem(
    tmp_path: Path, cancer_model: LogisticRegression, cancer: tuple[Any, Any]
):
    _, test = cancer
    # A ZipMap output has no static width: the base class catches it at scoring time.
    zipmap = export_sklearn(cancer_model, 30, tmp_path / "lr.onnx", zipmap=True)
    with pytest.raises(TargetError, match=r"3 in model\.classes"):
        onnx_model(zipmap, ["a", "b", "c"], (30,)).logits(torch.from_numpy(test.x[:5]))
    nan = export_torch(
        nn.Sequential(nn.Flatten(), nan_model()), tmp_path / "nan.onnx", outputs=("logits",)
    )
    with pytest.raises(TargetError, match="NaN or infinite outputs for 4 of 4"):
        onnx_model(nan, DIGITS_CLASSES, IMAGE).logits(torch.zeros(4, *IMAGE))


def test_a_probabilities_output_is_read_as_probabilities(
    tmp_path: Path, image_mlp: nn.Module, digits_images: torch.Tensor
):
    """A torch export that ends in softmax: `scores = "probabilities"` gives log-probabilities
    whose softmax is the module's probabilities; read as logits it would not be."""
    path = export_torch(nn.Sequential(image_mlp, nn.Softmax(dim=1)), tmp_path / "soft.onnx")
    with torch.no_grad():
        expected = image_mlp(digits_images).softmax(1)
    read = onnx_model(path, DIGITS_CLASSES, IMAGE, scores="probabilities")
    torch.testing.assert_close(read.logits(digits_images).softmax(1), expected, atol=1e-5, rtol=0)
    as_logits = onnx_model(path, DIGITS_CLASSES, IMAGE).logits(digits_images).softmax(1)
    assert float((as_logits - expected).abs().max()) > 0.1


class _TwoHeads(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.body(x)
        return logits, logits.abs()


def test_two_float_outputs_need_model_options_output(
    tmp_path: Path, image_mlp: nn.Module, torch_onnx: Path, digits_images: torch.Tensor
):
    path = export_torch(_TwoHeads(image_mlp), tmp_path / "two.onnx", outputs=("logits", "size"))
    with pytest.raises(TargetError, match=r"set model\.options\.output"):
        onnx_model(path, DIGITS_CLASSES, IMAGE)
    chosen = onnx_model(path, DIGITS_CLASSES, IMAGE, output="logits")
    reference = onnx_model(torch_onnx, DIGITS_CLASSES, IMAGE)
    torch.testing.assert_close(chosen.logits(digits_images), reference.logits(digits_images))


DIGITS_ONNX_CONFIG = """\
version = 1

[project]
name = "onnx-digits"

[model]
name = "digits-onnx"
kind = "onnx"
path = "model.onnx"
classes = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]

[model.options]
batch_size = 64

[model.input]
shape = [1, 8, 8]

[data]
source = "digits"
test_fraction = 0.25
seed = 0
max_samples = 60

[[threats]]
name = "square-linf"
attack = "square"
budgets = [0.1, 0.3]
queries = 40

[[threats]]
name = "noise"
attack = "gaussian-noise"
budgets = [1, 3]
{extra_threat}
[policy]
min_clean_accuracy = 0.8

[[policy.robust]]
threat = "square-linf"
budget = 0.3
min_accuracy = {min_robust}

[integrity]
enabled = false
"""


def _ledger_kinds(folder: Path) -> list[str]:
    db = folder / "hardenml.db"
    return [e.kind for e in Ledger(db).events()] if db.exists() else []


@pytest.fixture
def digits_ws(tmp_path: Path, torch_onnx: Path) -> Path:
    folder = tmp_path / "ws"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(torch_onnx.read_bytes())
    config = folder / "hardenml.toml"
    config.write_text(digits_config())
    return config


def digits_config(*, extra_threat: str = "", min_robust: float = 0.9) -> str:
    return DIGITS_ONNX_CONFIG.format(extra_threat=extra_threat, min_robust=min_robust)


@pytest.mark.parametrize(
    ("min_robust", "exit_code", "events"),
    [
        (0.9, 1, ["run.completed", "finding.opened", "gate.decided"]),
        (0.05, 0, ["run.completed", "gate.decided"]),
    ],
    ids=["fails", "passes"],
)
def test_scan_and_gate_a_torch_export_with_blackbox_threats(
    digits_ws: Path, min_robust: float, exit_code: int, events: list[str]
):
    digits_ws.write_text(digits_config(min_robust=min_robust))
    cfg = str(digits_ws)
    scan = run("scan", "--config", cfg)
    assert scan.exit_code == 0, scan.output
    assert says(scan, "clean_accuracy", "robust_accuracy[square-linf@0.3]", "noise@3")
    gate = run("gate", "--config", cfg)
    assert gate.exit_code == exit_code, gate.output
    report = json.loads((digits_ws.parent / "gate-report.json").read_text())
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["clean_accuracy"]["passed"]
    robust = checks["robust_accuracy[square-linf@0.3]"]
    # Square really attacks through onnxruntime: the scores it reads move the inputs.
    assert robust["value"] < checks["clean_accuracy"]["value"]
    assert robust["passed"] == (exit_code == 0)
    assert _ledger_kinds(digits_ws.parent) == events


GRADIENT_THREAT = """
[[threats]]
name = "pgd-linf"
attack = "pgd"
budgets = [0.1]
steps = 5
"""


def test_a_gradient_threat_is_refused_through_the_cli(digits_ws: Path):
    digits_ws.write_text(digits_config(extra_threat=GRADIENT_THREAT))
    for command in ("scan", "gate"):
        result = run(command, "--config", str(digits_ws))
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        assert says(result, "model.onnx", "no input gradients", "need input gradients")
        assert says(result, "square,", "hopskipjump,", "gaussian-noise,", "tabular-blackbox")
    assert _ledger_kinds(digits_ws.parent) == []


def test_a_corrupt_onnx_file_exits_2_naming_it(digits_ws: Path):
    (digits_ws.parent / "model.onnx").write_bytes(b"\x08\x07garbage that is not a model")
    for command in ("scan", "gate"):
        result = run(command, "--config", str(digits_ws))
        assert result.exit_code == 2, result.output
        assert says(result, "model.onnx is not a readable ONNX model")
        assert "Traceback" not in result.output
    assert _ledger_kinds(digits_ws.parent) == []


CANCER_ONNX_CONFIG = """\
version = 1

[project]
name = "onnx-cancer"

[model]
name = "cancer-onnx"
kind = "onnx"
path = "model.onnx"
classes = ["malignant", "benign"]

[model.input]
shape = [30]

[data]
source = "breast_cancer"
scale = "minmax"
test_fraction = 0.2
seed = 0
max_samples = 60

[[threats]]
name = "tabular"
attack = "tabular-blackbox"
budgets = [0.02, 0.05]
queries = 40

[policy]
min_clean_accuracy = 0.9

[[policy.robust]]
threat = "tabular"
budget = 0.02
min_accuracy = 0.5
"""


def test_scan_and_gate_a_sklearn_export_with_tabular_blackbox(
    tmp_path: Path, cancer_model: LogisticRegression
):
    folder = tmp_path / "cancer"
    folder.mkdir()
    export_sklearn(cancer_model, 30, folder / "model.onnx", zipmap=True)
    config = folder / "hardenml.toml"
    config.write_text(CANCER_ONNX_CONFIG)
    scan = run("scan", "--config", str(config))
    assert scan.exit_code == 0, scan.output
    assert says(scan, "robust_accuracy[tabular@0.02]")
    gate = run("gate", "--config", str(config))
    assert gate.exit_code == 0, gate.output
    report = json.loads((folder / "gate-report.json").read_text())
    assert report["decision"]["status"] == "pass"
    checks = {c["name"]: c for c in report["checks"]}
    assert all(c["passed"] for c in checks.values())
    # The search moved rows across the boundary through onnxruntime's ZipMap scores.
    assert checks["robust_accuracy[tabular@0.02]"]["value"] < checks["clean_accuracy"]["value"]
    assert _ledger_kinds(folder) == ["run.completed", "gate.decided"]
