"""Optional MLflow logging: each scan's measurements with their intervals and each gate's
reports, in a local file-store tracking URI, read back with MLflow's own client."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import mlflow.tracking as mlflow_tracking
import pytest

from hardenml.records import Measurement
from hardenml.report import HTML_NAME
from hardenml.report.mlflow_tracking import (
    RUN_TAG,
    TELEMETRY_ENV,
    TrackingError,
    log_scan,
    metric_name,
    tracking_uri,
)
from hardenml.workflow import GATE_REPORT_NAME, Workspace, gate
from workspace import write_workspace

pytestmark = pytest.mark.slow  # importing mlflow alone takes seconds

MLFLOW = '\n[mlflow]\nenabled = true\nexperiment = "digits-release"\n'


@pytest.fixture
def tracked(tmp_path: Path, digits_weights: Path) -> Path:
    config = write_workspace(tmp_path, digits_weights, min_clean=0.5, max_samples=60)
    config.write_text(config.read_text() + MLFLOW)
    return config


def _runs(ws: Workspace) -> list:
    client = mlflow_tracking.MlflowClient(tracking_uri=tracking_uri(ws.config))
    experiment = client.get_experiment_by_name("digits-release")
    assert experiment is not None
    return client.search_runs([experiment.experiment_id])


def test_a_gate_logs_the_scans_measurements_and_its_reports(tracked: Path) -> None:
    ws = Workspace.open(tracked)
    messages: list[str] = []
    decision = gate(ws, log=messages.append)
    assert os.environ[TELEMETRY_ENV] == "true"
    uri = tracking_uri(ws.config)
    assert uri == (tracked.parent / "mlruns").resolve().as_uri()
    (run,) = _runs(ws)
    assert (
        run.data.tags[RUN_TAG] == decision.run.run_id and run.info.run_name == decision.run.run_id
    )
    metrics, params = run.data.metrics, run.data.params
    for raw in decision.run.payload["measurements"]:
        m = Measurement.from_dict(raw)
        name = metric_name(m)
        assert metrics[name] == pytest.approx(m.value)
        assert metrics[f"{name}.ci_low"] == pytest.approx(m.ci_low)
        assert metrics[f"{name}.ci_high"] == pytest.approx(m.ci_high)
        assert metrics[f"{name}.n"] == m.n
    assert {"pgd-linf/0.1/robust_accuracy", "clean/clean_accuracy", "clean/ece"} <= set(metrics)
    assert params["seed"] == "0" and params["model_sha256"] == decision.run.model_sha256
    assert run.data.tags["hardenml.gate.status"] == "fail" and metrics["gate/passed"] == 0.0
    client = mlflow_tracking.MlflowClient(tracking_uri=uri)
    logged = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "reports")}
    assert {HTML_NAME, "report.sarif", "report.xml", "model-card.md", GATE_REPORT_NAME} <= logged
    assert any(m.startswith("mlflow: logged to run") for m in messages)

    # The next gate reuses the scan: the same MLflow run, no second one.
    gate(Workspace.open(tracked))
    (again,) = _runs(ws)
    assert again.info.run_id == run.info.run_id


def test_a_tracking_failure_never_changes_the_verdict(tracked: Path) -> None:
    tracked.write_text(
        tracked.read_text().replace(
            'experiment = "digits-release"', 'tracking_uri = "file:///proc/hardenml-mlruns"'
        )
    )
    ws = Workspace.open(tracked)
    messages: list[str] = []
    decision = gate(ws, log=messages.append)
    assert decision.exit_code == 1 and (ws.config.reports_dir / HTML_NAME).is_file()
    assert any(m.startswith("mlflow: could not log to MLflow at file:///proc") for m in messages)


def test_without_mlflow_installed_the_message_names_the_extra(
    tracked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = Workspace.open(tracked)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(TrackingError, match=r"hardenml\[mlflow\]"):
        log_scan(ws.config, {"run_id": "r", "measurements": []})
