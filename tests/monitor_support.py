"""Shared by the monitor tests: a workspace with a released model (and a candidate), the
real service on a free 127.0.0.1 port, and a small HTTP client."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from hardenml import workflow
from hardenml.monitor.app import build_app
from hardenml.monitor.build import build_service
from hardenml.monitor.server import BackgroundServer
from hardenml.monitor.service import MonitorService
from hardenml.train import train_classifier
from hardenml.zoo import mlp
from workspace import write_workspace

TOKEN = "s3cret-token-for-tests"
TOKEN_ENV = "HARDENML_MONITOR_TOKEN"


def save_weights(module: nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return path


def second_mlp(x_train: Any, y_train: Any) -> nn.Module:
    """Another digits MLP (other seed, fewer epochs): the blue/green candidate."""
    torch.manual_seed(1)
    return train_classifier(mlp(64, 10, hidden=32), x_train, y_train, epochs=5, seed=1)


def monitor_workspace(
    folder: Path,
    weights: Path,
    *,
    monitor: str = "detectors = []\n",
    candidate: Path | None = None,
) -> workflow.Workspace:
    """A digits-MLP workspace whose `weights` are released (forced: the gate has its own
    tests). With `candidate`, that file is released first, so it is a released artifact
    the service may load as the candidate, and `weights` is the last release."""
    config = write_workspace(folder, weights)
    if candidate is not None:
        monitor += f'candidate = "{candidate.name}"\n'
    with config.open("a") as fh:
        fh.write("\n[monitor]\n" + monitor)
    ws = workflow.Workspace.open(config)
    if candidate is not None:
        workflow.release(ws, folder / candidate.name, force=True)
    workflow.release(ws, force=True)
    return ws


@contextmanager
def running(ws: workflow.Workspace, *, ingest_only: bool = False) -> Iterator[Served]:
    service = build_service(ws.config, ws.ledger, ingest_only=ingest_only)
    with BackgroundServer(build_app(service, token=TOKEN)) as server:
        yield Served(service, server.url, server.port)


@dataclass
class Served:
    service: MonitorService
    url: str
    port: int


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = TOKEN,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    connection: http.client.HTTPConnection | None = None,
) -> Answer:
    """One request to the service on `port` (over `connection` when given: keep-alive)."""
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    sent = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    try:
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        return Answer(response.status, response.read(), dict(response.getheaders()))
    finally:
        if connection is None:
            conn.close()


def serve_cli(config: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`hardenml monitor serve` in a subprocess on `port`, once `/healthz` answers."""
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hardenml",
            "monitor",
            "serve",
            "--port",
            str(port),
            "--config",
            str(config),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                if call(port, "GET", "/healthz", token=None).status == 200:
                    return server
            except OSError:
                pass
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.1)
    except BaseException:
        if server.poll() is None:
            server.kill()
            server.wait()
        raise
