"""Patches for every target kind, through the `hardenml` command: a TorchScript digits
model fine-tuned and wrapped and written back as TorchScript; a RandomForest hardened by
adversarial data augmentation; and a patch that changed nothing writing nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
import torch
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from torch import nn
from typer.testing import CliRunner, Result

from hardenml import workflow
from hardenml.cli import app
from hardenml.config import DataConfig, ModelConfig
from hardenml.data import Dataset, prepare
from hardenml.ledger import Ledger
from hardenml.patch import (
    PatchUnchanged,
    TrainingAttack,
    available_patches,
    make_patch,
    patch_class,
)
from hardenml.targets import InputSpec, SklearnTarget, file_sha256
from hardenml.threats.tabular import TabularRandomSearch
from workspace import write_workspace

runner = CliRunner()

DIGITS_TORCHSCRIPT = """\
version = 1

[project]
name = "digits-ts"

[model]
name = "digits-ts"
kind = "torchscript"
path = "model.pt"
classes = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
device = "cpu"

[model.input]
shape = [1, 8, 8]
bounds = [0.0, 1.0]

[data]
source = "digits"
test_fraction = 0.25
seed = 0
max_samples = 100

[[threats]]
name = "pgd-linf"
attack = "pgd"
budgets = [0.1]
steps = 10

[policy]
min_clean_accuracy = 0.8
clean_margin = 0.05

[[policy.robust]]
threat = "pgd-linf"
budget = 0.1
min_accuracy = 0.9

[integrity]
enabled = false
"""

CANCER_FOREST = """\
version = 1

[project]
name = "cancer-rf"

[model]
name = "cancer-rf"
kind = "sklearn"
path = "model.skops"
classes = ["malignant", "benign"]

[model.input]
shape = [30]
bounds = [0.0, 1.0]

[data]
source = "breast_cancer"
scale = "minmax"
test_fraction = 0.25
seed = 0

[[threats]]
name = "tab-bb"
attack = "tabular-blackbox"
budgets = [0.1]
queries = 50

[policy]
min_clean_accuracy = 0.8
clean_margin = 0.05

[[policy.robust]]
threat = "tab-bb"
budget = 0.1
min_accuracy = 0.9

[integrity]
enabled = false
"""

# Settings that keep each TorchScript patch to a second or two on the digits MLP.
FAST = {
    "pgd_at": ["epochs=3", "steps=5", "lr=0.003"],
    "trades": ["epochs=1", "steps=5", "lr=0.003"],
    "fgsm_rs": ["epochs=1"],
    "n_fgsm": ["epochs=1"],
    "grad_align": ["epochs=1"],
    "atta": ["epochs=2"],
}


def run(*args: str) -> Result:
    return runner.invoke(app, list(args), catch_exceptions=False)


def settings(name: str) -> list[str]:
    return [arg for item in FAST.get(name, []) for arg in ("--set", item)]


@pytest.fixture
def torchscript_ws(tmp_path: Path, digits_mlp: nn.Module, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The session's digits MLP scripted and saved with torch.jit.save (no factory)."""
    torch.jit.save(torch.jit.script(digits_mlp), str(tmp_path / "model.pt"))
    (tmp_path / "hardenml.toml").write_text(DIGITS_TORCHSCRIPT)
    monkeypatch.chdir(tmp_path)
    return tmp_path


TORCHSCRIPT_PATCHES = [n for n in available_patches() if "torchscript" in patch_class(n).kinds]


def test_the_patches_that_train_or_wrap_torch_modules_patch_torchscript() -> None:
    expected = {"pgd_at", "trades", "fgsm_rs", "temperature", "abstain"}
    expected |= {"range_check", "bit_depth", "median_filter"}
    assert expected <= set(TORCHSCRIPT_PATCHES)


@pytest.mark.slow
@pytest.mark.parametrize("name", TORCHSCRIPT_PATCHES)
def test_torchscript_model_is_patched_written_as_torchscript_and_validated(
    name: str, torchscript_ws: Path
) -> None:
    parent_sha = file_sha256(torchscript_ws / "model.pt")
    patched = run("patch", "--with", name, *settings(name))
    assert patched.exit_code == 0, patched.output
    (event,) = Ledger(torchscript_ws / "hardenml.db").events(["model.patched"])
    p = event.payload
    artifact = torchscript_ws / p["artifact"]
    assert artifact.suffix == ".pt" and p["artifact_sha256"] == file_sha256(artifact)
    assert p["parent_sha256"] == parent_sha != p["artifact_sha256"]
    assert p["model"]["kind"] == "torchscript" and p["model"]["factory"] is None
    # A self-contained TorchScript file: loads with no hardenml code on the path.
    module = torch.jit.load(str(artifact))
    assert isinstance(module, torch.jit.ScriptModule)
    assert module(torch.rand(3, 1, 8, 8)).shape == (3, 10)

    checked = run("validate", "model.pt", str(artifact), "--json")
    assert checked.exit_code in (0, 1), checked.output
    verdict = json.loads(checked.stdout)
    assert verdict["candidate_sha256"] == p["artifact_sha256"]
    assert verdict["baseline_sha256"] == parent_sha
    robust = next(c for c in verdict["checks"] if c["name"].startswith("robust_accuracy"))
    if name == "pgd_at":  # its parameters trained: robust accuracy rose
        assert robust["candidate"] > robust["baseline"] + 0.05, robust
    if name == "temperature":  # same predictions, only the confidence changed
        clean = next(c for c in verdict["checks"] if c["name"].startswith("clean_accuracy"))
        assert clean["candidate"] == clean["baseline"]


def test_a_torchscript_finding_proposes_adversarial_training(torchscript_ws: Path) -> None:
    assert run("scan").exit_code == 0
    (finding,) = [
        f
        for f in json.loads(run("findings", "list", "--json").stdout)
        if f["metric"] == "robust_accuracy"
    ]
    shown = json.loads(run("findings", "show", finding["finding_id"], "--json").stdout)
    assert "hardenml patch --with pgd_at" in shown["remediation"]


def test_adversarial_training_that_never_beats_the_parent_writes_nothing(
    tmp_path: Path, digits_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A learning rate that wrecks the model in its one epoch: the best checkpoint is the
    # parent itself, which TRADES used to write out again as a "new" artifact.
    config = write_workspace(tmp_path / "ws", digits_weights)
    monkeypatch.chdir(config.parent)
    result = run(
        "patch", "--with", "trades", "--set", "eps=0.02", "--set", "lr=5", "--set", "epochs=1"
    )
    assert result.exit_code == 2, result.output
    assert "kept no trained epoch" in result.output
    assert "nothing was written or recorded" in result.output
    assert "next: hardenml validate" not in result.output
    assert not list((config.parent).rglob("*trades*"))
    ledger = Ledger(config.parent / "hardenml.db")
    assert ledger.events(["model.patched"]) == []
    assert ledger.verify().ok


def test_augmentation_that_finds_no_adversarial_example_writes_nothing(
    tmp_path: Path,
) -> None:
    # A constant model (always "benign"): no perturbation flips what it gets right, so
    # there is nothing to add and a refit would rebuild the same model.
    dummy = DummyClassifier(strategy="prior").fit(np.zeros((10, 30)), [0] * 3 + [1] * 7)
    ws = _forest_workspace(tmp_path, dummy)
    with pytest.raises(PatchUnchanged, match="found no adversarial example"):
        workflow.patch(ws, "adversarial_augmentation", trust=True)
    assert ws.ledger.events(["model.patched"]) == []
    assert not (ws.config.artifacts_dir / workflow.PATCHED_MODELS_DIR).exists()


def _load_skops(path: Path) -> object:
    return sio.load(path, trusted=sio.get_untrusted_types(file=path))


def _forest_workspace(folder: Path, estimator: object | None = None) -> workflow.Workspace:
    """The breast-cancer workspace with `estimator` (default: a small RandomForest fit on
    the minmax-scaled train split) saved with skops."""
    if estimator is None:
        train, _ = prepare(
            DataConfig(source="breast_cancer", scale="minmax", test_fraction=0.25), root=folder
        )
        estimator = RandomForestClassifier(n_estimators=10, max_depth=5, random_state=0)
        estimator.fit(train.x, train.y)
    sio.dump(estimator, folder / "model.skops")
    (folder / "hardenml.toml").write_text(CANCER_FOREST)
    return workflow.Workspace.open(folder / "hardenml.toml")


@pytest.mark.slow
def test_random_forest_finding_proposes_augmentation_which_raises_robust_accuracy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forest_workspace(tmp_path)
    monkeypatch.chdir(tmp_path)
    # The forest's skops file holds sklearn.tree._tree.Tree, which skops does not trust
    # by default: every command that loads it needs --trust.
    assert run("scan", "--trust").exit_code == 0
    (finding,) = [
        f
        for f in json.loads(run("findings", "list", "--json").stdout)
        if f["metric"] == "robust_accuracy"
    ]
    shown = json.loads(run("findings", "show", finding["finding_id"], "--json").stdout)
    assert "hardenml patch --with adversarial_augmentation" in shown["remediation"]
    assert "pgd_at" not in shown["remediation"]

    patched = run("patch", "--with", "adversarial_augmentation", "--trust")
    assert patched.exit_code == 0, patched.output
    (event,) = Ledger(tmp_path / "hardenml.db").events(["model.patched"])
    p = event.payload
    assert p["model"]["kind"] == "sklearn" and p["artifact"].endswith(".skops")
    assert p["params"]["rounds"] == 2 and p["metrics"]["attacks"] == ["tab-bb@0.1"]
    assert p["metrics"]["added"] > 0 and p["history"][0]["round"] == 0
    refit, parent = (_load_skops(tmp_path / name) for name in (p["artifact"], "model.skops"))
    assert isinstance(refit, RandomForestClassifier)
    assert refit.get_params() == parent.get_params()  # a clone: the same hyperparameters

    checked = run("validate", "model.skops", p["artifact"], "--json", "--trust")
    verdict = json.loads(checked.stdout)
    checks = {c["name"]: c for c in verdict["checks"]}
    robust = checks["robust_accuracy[tab-bb@0.1] improvement"]
    # Paired on the same 143 test rows and attack draws: a large, significant gain.
    assert robust["passed"] and robust["candidate"] - robust["baseline"] >= 0.15, robust
    assert robust["ci"][0] > 0.1 and robust["p_value"] < 1e-4
    clean = checks["clean_accuracy non-inferiority"]
    assert clean["passed"] and clean["candidate"] >= clean["baseline"] - 0.02, clean


def test_augmentation_trains_at_the_given_budget_against_the_given_attacks() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(200, 3)).astype(np.float32)
    y = (x[:, 0] > 0.5).astype(np.int64)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y)
    target = SklearnTarget(forest, input_spec=InputSpec(shape=(3,)), classes=["lo", "hi"])
    model = ModelConfig.model_validate(
        {
            "name": "forest",
            "kind": "sklearn",
            "path": "forest.skops",
            "classes": ["lo", "hi"],
            "input": {"shape": [3]},
        }
    )
    attack = TrainingAttack("tb", TabularRandomSearch(queries=30), 0.3)
    result = make_patch("adversarial_augmentation", {"budget": 0.05, "rounds": 1})(
        target, model, Dataset(x, y, ("lo", "hi")), attacks=[attack]
    )
    assert result.metrics["attacks"] == ["tb@0.05"]
    # The rows it added lie within the budget of training rows: near the x0 = 0.5 edge.
    assert 0 < result.metrics["added"] < 60
