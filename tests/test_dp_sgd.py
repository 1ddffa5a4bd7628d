"""The dp_sgd patch trains the digits MLP under DP-SGD (Opacus) through the command line,
and the (epsilon, delta) it spent is reported in the lineage event, the gate report and the
model card."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hardenml.cli import app
from hardenml.ledger import Ledger
from workspace import write_workspace

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False, env={"HARDENML_LEDGER_KEY": ""})


@pytest.mark.slow
def test_dp_sgd_trains_on_digits_and_reports_its_epsilon(
    tmp_path: Path, digits_weights: Path
) -> None:
    cfg = write_workspace(tmp_path / "ws", digits_weights, min_clean=0.5, min_robust=0.0)
    patched = run(
        "patch", "--config", str(cfg), "--with", "dp_sgd", "--set", "epochs=8",
        "--set", "target_epsilon=4.0",
    )  # fmt: skip
    assert patched.exit_code == 0, patched.output
    (event,) = Ledger(cfg.parent / "hardenml.db").events(["model.patched"])
    privacy = event.payload["metrics"]["privacy"]
    n = privacy["training_samples"]
    assert 0 < privacy["epsilon"] <= 4.0 + 1e-6  # spent, within the target
    assert math.isclose(privacy["delta"], 1 / (10 * n))
    assert privacy["noise_multiplier"] > 0.3 and privacy["init"] == "scratch"
    history = event.payload["history"]
    assert [h["epsilon"] for h in history] == sorted(h["epsilon"] for h in history)
    assert event.payload["metrics"]["after"]["clean"] > 0.6  # it learned, privately

    # Gate the private model: its report and model card carry the guarantee.
    artifact = event.payload["artifact"]
    text = cfg.read_text().replace('path = "model.safetensors"', f'path = "{artifact}"')
    cfg.write_text(text)
    gated = run("gate", "--config", str(cfg))
    assert gated.exit_code in (0, 1), gated.output
    report = json.loads((cfg.parent / "gate-report.json").read_text())
    assert report["model"]["sha256"] == event.payload["artifact_sha256"]
    assert report["privacy"]["epsilon"] == privacy["epsilon"]
    card = (cfg.parent / "reports" / "model-card.md").read_text()
    assert f"({privacy['epsilon']:.2f}, {privacy['delta']:.2g})-differential privacy" in card


def test_dp_sgd_refuses_bad_settings(tmp_path: Path, digits_weights: Path) -> None:
    cfg = write_workspace(tmp_path / "ws", digits_weights)
    bad = run("patch", "--config", str(cfg), "--with", "dp_sgd", "--set", "delta=2")
    assert bad.exit_code == 2 and "delta" in bad.output
