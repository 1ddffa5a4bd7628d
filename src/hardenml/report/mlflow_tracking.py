"""Optional MLflow logging of each scan and each gate decision (`[mlflow]` in the config,
the `hardenml[mlflow]` extra).

One MLflow run per hardenml scan run, in the experiment `mlflow.experiment` (default: the
project's name), named after the scan's run id and tagged `hardenml.run_id`:

- params: model name, model and data sha256, seed, n, confidence, scan fingerprint;
- one metric per measurement, grouped by where it was measured: `clean/clean_accuracy`,
  `clean/ece`, `pgd-linf/0.1/robust_accuracy`, `behaviour/NAME`, with its interval as
  `NAME.ci_low` and `NAME.ci_high` and its sample count as `NAME.n` (the file store keeps a
  metric as a file named by its path, so no name may also be the folder of another: `ece`
  beside `ece/pgd-linf/0.1` could not be stored);
- the gate logs into the run it decided on: tags `hardenml.gate.status` and
  `hardenml.gate.exit_code`, the metric `gate/passed` (1 or 0), and every report it wrote
  as an artifact under `reports/`.

The tracking URI defaults to a local file store beside the config (`mlruns/`, where MLflow
itself would put it): no server, no database. Not under the artifacts folder: MLflow's file
store refuses a run whose path has a folder named `artifacts` in it. MLflow keeps its file
store in maintenance mode and refuses it unless `MLFLOW_ALLOW_FILE_STORE` is set, so
hardenml sets it (unless the environment already says otherwise) for a `file:` URI; any
other URI (`sqlite:///...`, an http(s) server) is used as given.
`MLFLOW_DISABLE_TELEMETRY=true` is set before mlflow is first imported, every time. A
failure to log never changes a verdict: it raises `TrackingError`, which the workflow
reports and moves on from.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hardenml.config import HardenConfig
from hardenml.gate import GateDecision
from hardenml.records import Measurement

TELEMETRY_ENV = "MLFLOW_DISABLE_TELEMETRY"
FILE_STORE_ENV = "MLFLOW_ALLOW_FILE_STORE"
MLFLOW_EXTRA = "pip install 'hardenml[mlflow]'"
RUN_TAG = "hardenml.run_id"
REPORTS_PATH = "reports"
# What MLflow accepts in a metric or param name on every platform.
_NOT_IN_NAME = re.compile(r"[^/\w.\- ]")


class TrackingError(Exception):
    """Logging to MLflow failed; the message says why and what to do."""


def tracking_uri(config: HardenConfig) -> str:
    """`mlflow.tracking_uri`, else a file store in `mlruns/` beside the config."""
    if config.mlflow.tracking_uri:
        return config.mlflow.tracking_uri
    return (config.root / "mlruns").resolve().as_uri()


def experiment_name(config: HardenConfig) -> str:
    return config.mlflow.experiment or config.project.name


def metric_name(m: Measurement) -> str:
    """`pgd-linf/0.1/robust_accuracy`, `clean/clean_accuracy`, `behaviour/NAME`: where the
    measurement was taken, then what, in the characters MLflow allows."""
    suite = re.fullmatch(r"behaviour\[(.+)\]", m.metric)
    if suite:
        parts = ["behaviour", suite.group(1)]
    elif m.threat is None:
        parts = ["clean", m.metric]
    else:
        parts = [m.threat, "-" if m.budget is None else f"{m.budget:g}", m.metric]
    return "/".join(_NOT_IN_NAME.sub("_", p) for p in parts)


def _client(config: HardenConfig) -> Any:
    os.environ[TELEMETRY_ENV] = "true"  # before the first import of mlflow, every time
    uri = tracking_uri(config)
    if uri.startswith("file:"):
        os.environ.setdefault(FILE_STORE_ENV, "true")
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise TrackingError(
            f"[mlflow] is enabled but mlflow is not installed: {MLFLOW_EXTRA}, or set "
            "mlflow.enabled = false"
        ) from None
    return MlflowClient(tracking_uri=uri)


def _experiment(client: Any, config: HardenConfig) -> str:
    name = experiment_name(config)
    found = client.get_experiment_by_name(name)
    return str(found.experiment_id if found is not None else client.create_experiment(name))


def _find_run(client: Any, experiment: str, run_id: str) -> str | None:
    runs = client.search_runs(
        [experiment], filter_string=f"tags.`{RUN_TAG}` = '{run_id}'", max_results=1
    )
    return runs[0].info.run_id if runs else None


def _create_run(client: Any, experiment: str, payload: Mapping[str, Any]) -> str:
    """A new MLflow run holding the scan's params and measurements."""
    from mlflow.entities import Metric, Param

    run_id = str(payload["run_id"])
    run = client.create_run(
        experiment,
        run_name=run_id,
        tags={RUN_TAG: run_id, "hardenml.model": str(payload.get("model"))},
    )
    measurements = [Measurement.from_dict(m) for m in payload.get("measurements", [])]
    params = {
        "model": payload.get("model"),
        "model_sha256": payload.get("model_sha256"),
        "data_sha256": payload.get("data_sha256"),
        "seed": payload.get("seed"),
        "n": payload.get("n"),
        "confidence": measurements[0].confidence if measurements else None,
        "scan_fingerprint": payload.get("scan_fingerprint"),
    }
    now = int(time.time() * 1000)
    metrics = [
        Metric(key, float(value), now, 0)
        for m in measurements
        for key, value in (
            (metric_name(m), m.value),
            (f"{metric_name(m)}.ci_low", m.ci_low),
            (f"{metric_name(m)}.ci_high", m.ci_high),
            (f"{metric_name(m)}.n", m.n),
        )
        if math.isfinite(value)  # a metric over zero samples is NaN: MLflow gets none
    ]
    client.log_batch(
        run.info.run_id,
        metrics=metrics,
        params=[Param(k, str(v)) for k, v in params.items() if v is not None],
    )
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def log_scan(config: HardenConfig, payload: Mapping[str, Any]) -> str:
    """Log a scan run (its `run.completed` payload) once; returns the MLflow run id."""
    try:
        client = _client(config)
        experiment = _experiment(client, config)
        existing = _find_run(client, experiment, str(payload["run_id"]))
        return existing or _create_run(client, experiment, payload)
    except TrackingError:
        raise
    except Exception as exc:  # mlflow raises its own, store and network errors alike
        raise TrackingError(f"could not log to MLflow at {tracking_uri(config)}: {exc}") from exc


def log_gate(config: HardenConfig, decision: GateDecision, reports: Sequence[Path]) -> str:
    """Log a gate decision and the report files it wrote into the MLflow run of the scan
    it decided on (created now if that scan was never logged); returns the run id."""
    try:
        client = _client(config)
        experiment = _experiment(client, config)
        payload = decision.run.payload
        run_id = _find_run(client, experiment, str(payload["run_id"])) or _create_run(
            client, experiment, payload
        )
        client.set_tag(run_id, "hardenml.gate.status", decision.status)
        client.set_tag(run_id, "hardenml.gate.exit_code", str(decision.exit_code))
        client.log_metric(run_id, "gate/passed", 1.0 if decision.passed else 0.0)
        for path in reports:
            if path.is_file():
                client.log_artifact(run_id, str(path), REPORTS_PATH)
        return run_id
    except TrackingError:
        raise
    except Exception as exc:
        raise TrackingError(f"could not log to MLflow at {tracking_uri(config)}: {exc}") from exc
