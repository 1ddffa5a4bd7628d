"""The Python API does what the CLI does, and scans models held in memory."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from torch import nn

import hardenml
from hardenml import ConfigError, DataError, scan_model


def test_the_api_covers_the_whole_loop() -> None:
    for name in ("Workspace", "scan", "patch", "validate", "gate", "release", "scan_model"):
        obj = getattr(hardenml, name)
        assert obj.__doc__, f"hardenml.{name} has no docstring"


def test_scan_an_in_memory_torch_module(digits_mlp: nn.Module, digits) -> None:
    _, _, x_test, y_test = digits
    result = scan_model(
        digits_mlp,
        x_test[:80],
        y_test[:80],
        threats=[{"name": "pgd", "attack": "pgd", "budgets": [0.1], "steps": 10}],
        policy={"robust": [{"threat": "pgd", "budget": 0.1, "min_accuracy": 0.99}]},
        integrity={"enabled": False},
    )
    clean = result.measurement("clean_accuracy")
    robust = result.measurement("robust_accuracy[pgd@0.1]")
    assert clean.n == 80 and clean.value > 0.8 and robust.value < clean.value
    (finding,) = [f for f in result.findings if f.metric == "robust_accuracy"]
    assert "pgd_at" in finding.remediation  # a torch module can be adversarially trained
    # The same model and arrays give the same numbers: the hash and the seed fix them.
    again = scan_model(
        digits_mlp,
        x_test[:80],
        y_test[:80],
        threats=[{"name": "pgd", "attack": "pgd", "budgets": [0.1], "steps": 10}],
        integrity={"enabled": False},
    )
    assert again.model_sha256 == result.model_sha256
    assert again.measurement("robust_accuracy[pgd@0.1]").value == robust.value


def test_scan_an_in_memory_estimator_with_a_black_box_threat(digits) -> None:
    x_train, y_train, x_test, y_test = digits
    forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(x_train, y_train)
    result = scan_model(
        forest,
        x_test[:40],
        y_test[:40],
        threats=[{"name": "rs", "attack": "tabular-blackbox", "budgets": [0.2], "queries": 30}],
        reference=(x_train, y_train),
    )
    assert result.measurement("robust_accuracy[rs@0.2]").n == 40
    assert "leakage" in result.analysis["data_checks"]


def test_bad_arguments_are_errors_that_say_what_is_wrong(digits_mlp: nn.Module) -> None:
    x = np.zeros((4, 64), dtype=np.float32)
    with pytest.raises(DataError, match="shape"):
        scan_model(digits_mlp, x, np.zeros(3, dtype=int), threats=[])
    with pytest.raises(DataError, match="NaN"):
        scan_model(digits_mlp, x + np.nan, np.zeros(4, dtype=int), threats=[])
    with pytest.raises(ConfigError, match="steps"):
        scan_model(
            digits_mlp,
            x,
            np.zeros(4, dtype=int),
            threats=[{"name": "p", "attack": "pgd", "budgets": [0.1], "stepz": 3}],
        )
