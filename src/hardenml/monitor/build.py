"""Assemble a `MonitorService` from a workspace's config and ledger.

The CLI opens the workspace as every command does (`Workspace.open`: the config checked,
the target kind's options validated, the workspace folder on the import path) and hands
its config and ledger here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hardenml.config import HardenConfig
from hardenml.data import fit_to_shape, prepare
from hardenml.ledger import Ledger
from hardenml.monitor.foreground import Foreground
from hardenml.monitor.metrics import MonitorMetrics
from hardenml.monitor.models import candidate_model, released_model
from hardenml.monitor.readings import MonitorError
from hardenml.monitor.service import MonitorService
from hardenml.monitor.telemetry import TelemetryStore
from hardenml.monitor.telemetry_log import TelemetryLog
from hardenml.monitor.traffic import TrafficPlan, TrafficRouter
from hardenml.monitor.watch import build_watch
from hardenml.monitor.writer import TelemetryWriter
from hardenml.targets import input_spec_from_config

TELEMETRY_LOG = "telemetry-log"


@dataclass(frozen=True)
class ReferenceData:
    """The rows the detectors compare live traffic with (flattened), and which split of
    `[data]` they came from."""

    rows: np.ndarray
    split: str


def read_token(workspace: HardenConfig) -> str:
    """The bearer token: `$token_env` when set and non-empty, else `token_file`'s first
    line. Refuses to run without one: an open service would serve anyone."""
    config = workspace.monitor
    if config.token_env and os.environ.get(config.token_env):
        return os.environ[config.token_env].strip()
    if config.token_file is not None:
        path = workspace.resolve(config.token_file)
        try:
            token = path.read_text(encoding="utf-8").strip().splitlines()
        except OSError as exc:
            raise MonitorError(
                f"monitor.token_file = {str(config.token_file)!r}: cannot read {path} "
                f"({exc.strerror or exc})"
            ) from None
        if token and token[0].strip():
            return token[0].strip()
        raise MonitorError(f"monitor.token_file {path} is empty; write the token on its first line")
    where = f"the environment variable {config.token_env}" if config.token_env else "no variable"
    raise MonitorError(
        f"no bearer token: {where} is unset and monitor.token_file is not set. Export "
        f"{config.token_env or 'HARDENML_MONITOR_TOKEN'}=<token> (or set monitor.token_env / "
        "monitor.token_file); the service refuses to run unauthenticated"
    )


def reference_data(config: HardenConfig) -> ReferenceData:
    """`monitor.reference` (default: `data.split`) of the workspace's data, at most
    `monitor.reference_max_rows` rows drawn with the data seed."""
    split = config.monitor.reference or config.data.split
    _, chosen = prepare(config.data.model_copy(update={"split": split}), root=config.root)
    chosen = fit_to_shape(chosen, tuple(config.model.input.shape))
    limit = config.monitor.reference_max_rows
    x = chosen.x
    if len(x) > limit:
        keep = np.sort(np.random.default_rng(config.data.seed).choice(len(x), limit, replace=False))
        x = x[keep]
    return ReferenceData(np.asarray(x, np.float32).reshape(len(x), -1), split)


def telemetry_log_folder(config: HardenConfig) -> Path:
    """Where telemetry waits between a request and its commit: beside the database."""
    return config.ledger_path.parent / TELEMETRY_LOG


def build_service(
    config: HardenConfig, ledger: Ledger, *, trust: bool = False, ingest_only: bool = False
) -> MonitorService:
    """The service `[monitor]` describes: the last release (and the candidate) loaded from
    the ledger's artifacts, telemetry to the workspace database, the configured detectors
    and alert rules. `ingest_only`: no model is loaded; the service records what another
    service posts to `/v1/ingest`."""
    monitor = config.monitor
    ledger.check_writable()
    events = ledger.events()
    router = None
    if not ingest_only:
        released = released_model(config, events, trust=trust)
        candidate = (
            None
            if monitor.candidate is None
            else candidate_model(config, events, monitor.candidate, trust=trust)
        )
        share = monitor.traffic_split if candidate is not None else 0.0
        router = TrafficRouter(TrafficPlan(released, candidate, share, monitor.seed))
    metrics = MonitorMetrics()
    reference = reference_data(config)
    # The requests in flight, which the writer's and the detectors' processes yield to.
    foreground = Foreground()
    watch = build_watch(
        config,
        reference_rows=reference.rows,
        model=None if router is None else router.plan.released.target,
        ledger=ledger,
        metrics=metrics,
        foreground=foreground,
    )
    store = TelemetryStore(config.ledger_path)
    telemetry = monitor.telemetry
    writer = TelemetryWriter(
        store,
        TelemetryLog(telemetry_log_folder(config)),
        batch_size=telemetry.batch_size,
        flush_interval_s=telemetry.flush_interval_s,
        retention_count=telemetry.retention_count,
        retention_days=telemetry.retention_days,
        max_held=telemetry.max_queued_records,
        process=telemetry.writer_process,
        niceness=telemetry.writer_niceness,
        idle_priority=telemetry.writer_idle_priority,
        foreground=foreground,
    )
    return MonitorService(
        model_name=config.model.name,
        classes=config.model.classes,
        input_spec=input_spec_from_config(config.model),
        router=router,
        store=store,
        writer=writer,
        ledger=ledger,
        watch=watch,
        metrics=metrics,
        keep_raw_inputs=monitor.telemetry.keep_raw_inputs,
        max_rows=monitor.max_rows,
        max_body_bytes=monitor.max_body_bytes,
        foreground=foreground,
    )
