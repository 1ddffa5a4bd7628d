"""`hardenml monitor serve | ingest | rollback | verify`: the live service."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hardenml import workflow
from hardenml.cli._shared import (
    EXIT_TAMPERED,
    ConfigOpt,
    TrustOpt,
    console,
    err,
    fail,
    note,
    user_errors,
)

MONITOR_EXTRA = (
    "the monitor needs fastapi, uvicorn, prometheus-client and orjson: "
    "pip install 'hardenml[monitor]'"
)

HostOpt = Annotated[
    str | None, typer.Option("--host", help="Address to bind (default: monitor.host).")
]
PortOpt = Annotated[
    int | None, typer.Option("--port", help="Port to listen on (default: monitor.port).")
]


def _open(config: Path | None) -> workflow.Workspace:
    try:
        import fastapi  # noqa: F401
        import orjson  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise fail(MONITOR_EXTRA) from None
    return workflow.Workspace.open(config)


def _serve(
    config: Path | None, host: str | None, port: int | None, trust: bool, ingest_only: bool
) -> None:
    from hardenml.monitor.app import build_app
    from hardenml.monitor.build import build_service, read_token
    from hardenml.monitor.readings import MonitorError
    from hardenml.monitor.server import serve_forever

    with user_errors():
        ws = _open(config)
        try:
            token = read_token(ws.config)
            service = build_service(ws.config, ws.ledger, trust=trust, ingest_only=ingest_only)
        except MonitorError as exc:
            raise fail(str(exc)) from None
    bind_host = host or ws.config.monitor.host
    bind_port = ws.config.monitor.port if port is None else port
    if bind_host not in ("127.0.0.1", "localhost", "::1"):
        note(f"note: listening on {bind_host}, reachable from other machines")
    shares = ", ".join(f"{v} {s:.0%}" for v, s in service.shares().items()) or "ingest only"
    err.print(f"hardenml monitor on http://{bind_host}:{bind_port} ({shares})", highlight=False)
    try:
        serve_forever(build_app(service, token=token), host=bind_host, port=bind_port)
    except MonitorError as exc:
        raise fail(str(exc)) from None


def monitor_serve(
    config: ConfigOpt = None, host: HostOpt = None, port: PortOpt = None, trust: TrustOpt = False
) -> None:
    """Serve the released model (and the candidate) with telemetry, detectors and alerts."""
    _serve(config, host, port, trust, ingest_only=False)


def monitor_ingest(config: ConfigOpt = None, host: HostOpt = None, port: PortOpt = None) -> None:
    """Watch another service: record what it posts to /v1/ingest (no model is loaded)."""
    _serve(config, host, port, False, ingest_only=True)


def monitor_rollback(
    config: ConfigOpt = None,
    url: Annotated[
        str | None, typer.Option("--url", help="The service (default: http://monitor.host:port).")
    ] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why, for the ledger.")] = "rollback",
) -> None:
    """Send every request of a running service to the released model."""
    from hardenml.monitor.build import read_token
    from hardenml.monitor.client import post_json
    from hardenml.monitor.readings import MonitorError

    with user_errors():
        ws = _open(config)
        base = url or f"http://{ws.config.monitor.host}:{ws.config.monitor.port}"
        try:
            answer = post_json(
                base.rstrip("/") + "/v1/rollback", read_token(ws.config), {"reason": reason}
            )
        except MonitorError as exc:
            raise fail(str(exc)) from None
    console.print(f"rolled back: {answer.get('before')} -> {answer.get('after')}", highlight=False)


def monitor_verify(config: ConfigOpt = None) -> None:
    """Check the telemetry's batch digests: exit 1 naming each changed or missing batch."""
    from hardenml.monitor.telemetry import verify_telemetry

    with user_errors():
        ws = _open(config)
        report = verify_telemetry(ws.config.ledger_path)
    if report.ok:
        console.print(
            f"telemetry ok: {report.records} records in {report.batches} batches"
            f" ({report.pruned_records} pruned by retention)"
        )
        return
    err.print(f"[bold red]telemetry TAMPERED[/]: {len(report.problems)} problem(s)")
    for problem in report.problems:
        err.print(f"  - {problem}", highlight=False)
    raise typer.Exit(EXIT_TAMPERED)


def register(app: typer.Typer) -> None:
    monitor_app = typer.Typer(
        no_args_is_help=True, help="The live service: telemetry, drift and attack alerts, rollback."
    )
    monitor_app.command("serve")(monitor_serve)
    monitor_app.command("ingest")(monitor_ingest)
    monitor_app.command("rollback")(monitor_rollback)
    monitor_app.command("verify")(monitor_verify)
    app.add_typer(monitor_app, name="monitor")
