"""Threats declare what they are; findings and remediations come from that, not from names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from hardenml.cli import app
from hardenml.data import load_source
from hardenml.threats import FAMILIES, available_threats, threat_class

runner = CliRunner()

CANCER_CONFIG = """\
version = 1

[project]
name = "cancer"

[model]
name = "cancer-logreg"
kind = "sklearn"
path = "model.skops"
classes = ["malignant", "benign"]

[model.input]
shape = [30]
bounds = [0.0, 1.0]

[data]
source = "breast_cancer"
scale = "minmax"
seed = 0
max_samples = 80

[[threats]]
name = "tab"
attack = "tabular"
budgets = [0.05, 0.1]
steps = 10

[policy]
min_clean_accuracy = 0.5

[[policy.robust]]
threat = "tab"
budget = 0.1
min_accuracy = 0.99

[integrity]
enabled = false
"""


@pytest.mark.parametrize("name", available_threats())
def test_every_threat_declares_family_access_and_a_sentence(name: str) -> None:
    cls = threat_class(name)
    assert cls.family in FAMILIES
    assert cls.access in ("gradients", "scores", "labels")
    assert cls.needs_gradients == (cls.access == "gradients") or name == "art"
    sentence = cls().describe(3.0 if cls.family == "corruption" else 0.25)
    assert sentence and ("3" in sentence or "0.25" in sentence)


def _cancer_workspace(folder: Path) -> Path:
    data = load_source("breast_cancer")
    x = (data.x - data.x.min(0)) / (data.x.max(0) - data.x.min(0))
    model = LogisticRegression(C=100.0, max_iter=2000).fit(x, data.y)
    folder.mkdir(parents=True, exist_ok=True)
    sio.dump(model, folder / "model.skops")
    (folder / "hardenml.toml").write_text(CANCER_CONFIG)
    return folder


def test_tabular_scan_with_budgets_below_one_runs_and_describes_the_attacker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = _cancer_workspace(tmp_path / "ws")
    monkeypatch.chdir(ws)
    scan = runner.invoke(app, ["scan"])
    assert scan.exit_code == 0, scan.output
    assert "Traceback" not in scan.output
    listed = runner.invoke(app, ["findings", "list", "--json"])
    findings = json.loads(listed.output)
    robust = [f for f in findings if f["metric"] == "robust_accuracy"]
    assert robust, findings
    finding = robust[0]
    # The tabular threat's own words, not a white-box L-infinity story.
    assert "mutable feature" in finding["exploitation"]
    assert "L-infinity" not in finding["exploitation"]
    assert "inputs the model classified correctly" in finding["exploitation"]
    # The finding proposes the patch that hardens a scikit-learn model against tabular
    # threats, not PGD-AT, which cannot patch this model.
    assert "pgd_at" not in finding["remediation"]
    assert "hardenml patch --with adversarial_augmentation" in finding["remediation"]
    gate = runner.invoke(app, ["gate"])
    assert gate.exit_code == 1, gate.output


def test_flip_count_is_over_the_correctly_classified_inputs() -> None:
    from hardenml.records import Measurement
    from hardenml.scan.policy import _flips

    clean = Measurement("clean_accuracy", None, None, 0.8, 0.7, 0.9, 0.95, 100, 0)
    robust = Measurement("robust_accuracy", "pgd", 0.1, 0.5, 0.4, 0.6, 0.95, 100, 0)
    # 80 right before the attack, 50 after: 30 flipped of 80, not "50% of inputs".
    assert _flips(robust, clean) == (
        "flips 30 of the 80 inputs the model classified correctly (37.5%)"
    )
    assert np.isclose(30 / 80, 0.375)
