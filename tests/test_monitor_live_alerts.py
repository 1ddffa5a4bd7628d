"""Detectors and alerts wired into the live service, end to end over HTTP: a drift alert
for shifted traffic (once, not per request) and none for traffic like the reference; a
query-campaign alert from hardenml's own Square attack run against the service, and
none from ordinary traffic; the deployed model re-scanned through `model.kind = "http"`."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from hardenml import workflow
from hardenml.config import HardenConfig
from hardenml.monitor.telemetry import TelemetryStore
from hardenml.records import ALERT_RAISED
from hardenml.targets import load_target
from hardenml.threats import threat_class
from monitor_support import TOKEN, TOKEN_ENV, Served, call, monitor_workspace, running

FAST_TELEMETRY = "[monitor.telemetry]\nflush_interval_s = 0.05\n"


class Webhook:
    """A real HTTP server on 127.0.0.1 that keeps what alert sinks post to it."""

    def __init__(self) -> None:
        received: list[tuple[str, dict[str, Any]]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.headers.get("Authorization", ""), json.loads(body)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.received = received
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


def settle(served: Served, evaluations: int, timeout: float = 60.0) -> None:
    """Wait until the writer has written everything sent, then for `evaluations` more
    evaluations of the window (each sees all of it)."""
    watch = served.service.watch
    assert watch is not None
    deadline = time.monotonic() + timeout
    while served.service.writer.backlog:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    target = watch.evaluations_ + evaluations
    while watch.evaluations_ < target:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def send(served: Served, rows: np.ndarray, per_request: int, client: str) -> int:
    for start in range(0, len(rows), per_request):
        batch = rows[start : start + per_request]
        answer = call(
            served.port,
            "POST",
            "/v1/predict",
            {"inputs": batch.tolist()},
            headers={"X-Client-Id": client},
        )
        assert answer.status == 200, answer.body
    return (len(rows) + per_request - 1) // per_request


def raised(ws: workflow.Workspace, rule: str) -> list[dict[str, Any]]:
    return [e.payload for e in ws.ledger.events([ALERT_RAISED]) if e.payload["rule"] == rule]


@pytest.mark.slow
def test_a_drift_alert_is_raised_once_for_shifted_traffic_and_not_for_natural_traffic(
    tmp_path: Path,
    digits_weights: Path,
    digits: tuple[np.ndarray, ...],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hook = Webhook()
    monkeypatch.setenv("HOOK_TOKEN", "hook-secret")
    ws = monitor_workspace(
        tmp_path / "ws",
        digits_weights,
        monitor=(
            'detectors = ["feature_drift"]\nwindow = 150\nmin_window = 60\n'
            "evaluate_every_s = 0.1\n"
            '[[monitor.alerts]]\nname = "input-drift"\ndetector = "feature_drift"\n'
            'threshold = 0.01\nraise_after = 2\nclear_after = 3\nseverity = "high"\n'
            f'[monitor.webhook]\nurl = "{hook.url}"\n'
            'headers = { Authorization = "env:HOOK_TOKEN" }\n' + FAST_TELEMETRY
        ),
    )
    # The reference is the scan's split (test); natural traffic comes from the train split.
    natural = digits[0][:300]
    shifted = np.clip(digits[0][300:600] * 0.5 + 0.4, 0.0, 1.0)
    with running(ws) as served:
        send(served, natural, 10, "shop")
        settle(served, 4)
        assert raised(ws, "input-drift") == []
        requests = send(served, shifted, 5, "shop")
        settle(served, 6)
        alerts = call(served.port, "GET", "/v1/alerts").json()
        families = {
            f.name: f
            for f in text_string_to_metric_families(
                call(served.port, "GET", "/metrics").body.decode()
            )
        }
    events = raised(ws, "input-drift")
    assert requests == 60 and len(events) == 1
    assert events[0]["detector"] == "feature_drift" and events[0]["p_value"] < 0.01
    assert [a["rule"] for a in alerts["active"]] == ["input-drift"]
    active = {s.labels["rule"]: s.value for s in families["hardenml_alert_active"].samples}
    assert active == {"input-drift": 1.0}
    p_values = families["hardenml_drift_p_value"].samples
    assert any(s.labels["detector"] == "feature_drift" and s.value < 0.01 for s in p_values)
    # The alert opened a finding owned as [owners] says, due as the policy's SLA says.
    opened = [e.payload for e in ws.ledger.events(["finding.opened"])]
    assert [f["metric"] for f in opened] == ["monitor.feature_drift"]
    assert opened[0]["owner"] == "ml-platform" and opened[0]["severity"] == "high"
    # ... and reached the webhook once, with the header read from the environment.
    deadline = time.monotonic() + 10
    while not hook.received and time.monotonic() < deadline:
        time.sleep(0.05)
    hook.close()
    assert [(body["kind"], body["rule"]) for _, body in hook.received] == [
        ("alert.raised", "input-drift")
    ]
    assert hook.received[0][0] == "hook-secret"


def _campaign_workspace(tmp_path: Path, digits_weights: Path) -> workflow.Workspace:
    return monitor_workspace(
        tmp_path / "ws",
        digits_weights,
        monitor=(
            'detectors = ["query_campaign"]\nwindow = 3000\nmin_window = 20\n'
            "evaluate_every_s = 0.1\nmax_rows = 256\n"
            '[[monitor.alerts]]\nname = "campaign"\ndetector = "query_campaign"\n'
            'feature = "*"\nthreshold = 0.001\nraise_after = 1\nseverity = "high"\n'
            + FAST_TELEMETRY
        ),
    )


def _http_config(ws: workflow.Workspace, url: str, client: str) -> HardenConfig:
    """The served model as a black box: `model.kind = "http"` at the live /v1/predict."""
    model = ws.config.model.model_copy(
        update={
            "kind": "http",
            "path": None,
            "factory": None,
            "factory_kwargs": {},
            "options": {
                "url": f"{url}/v1/predict",
                "token_env": TOKEN_ENV,
                "headers": {"X-Client-Id": client},
                "batch_size": 64,
            },
        }
    )
    return ws.config.model_copy(update={"model": model})


@pytest.mark.slow
def test_a_square_attack_on_the_service_raises_a_query_campaign_alert_for_its_client_only(
    tmp_path: Path, digits_weights: Path, digits: tuple[np.ndarray, ...]
) -> None:
    ws = _campaign_workspace(tmp_path, digits_weights)
    with running(ws) as served:
        # Ordinary traffic: many different inputs, none repeated.
        send(served, digits[0][:400], 20, "shop")
        settle(served, 3)
        assert raised(ws, "campaign") == []
        config = _http_config(ws, served.url, "attacker")
        target = load_target(config.model, None)
        square = threat_class("square")(queries=60)
        x = torch.from_numpy(digits[2][:6])
        y = torch.from_numpy(digits[3][:6]).long()
        result = square(target, x, y, budget=0.1, generator=torch.Generator().manual_seed(0))
        settle(served, 3)
        send(served, digits[0][400:500], 20, "shop")
        settle(served, 3)
    events = raised(ws, "campaign")
    assert result.queries >= 60
    assert [e["feature"] for e in events] == ["attacker"]
    stored = TelemetryStore(ws.config.ledger_path).records()
    assert sum(r["client_id"] == "attacker" for r in stored) == target.queries


@pytest.mark.slow
def test_the_http_target_scans_the_live_service(
    tmp_path: Path, digits_weights: Path, digits: tuple[np.ndarray, ...]
) -> None:
    ws = monitor_workspace(tmp_path / "ws", digits_weights, monitor=FAST_TELEMETRY + "\n")
    served_config = ws.config
    with running(ws) as served:
        folder = tmp_path / "rescan"
        folder.mkdir()
        text = (ws.config.source or Path()).read_text()
        text = text.replace('kind = "pytorch"', 'kind = "http"')
        text = text.replace('factory = "hardenml.zoo:mlp"\n', "")
        text = text.replace(
            "factory_kwargs = { in_features = 64, classes = 10, hidden = 32 }\n", ""
        )
        text = text.replace('path = "model.safetensors"\n', "")
        text = text.replace(
            'device = "cpu"\n',
            f'\n[model.options]\nurl = "{served.url}/v1/predict"\ntoken_env = "{TOKEN_ENV}"\n'
            'headers = { "X-Client-Id" = "rescan" }\n',
        )
        text = text.replace(
            'attack = "pgd"\nbudgets = [0.02, 0.1]\nsteps = 10',
            'attack = "square"\nbudgets = [0.02, 0.1]\nqueries = 20',
        )
        (folder / "hardenml.toml").write_text(text)
        rescan = workflow.Workspace.open(folder / "hardenml.toml")
        result = workflow.scan(rescan)
        local = workflow.scan(workflow.Workspace.open(served_config.source))
    clean = result.measurement("clean_accuracy").value
    local_clean = local.measurement("clean_accuracy").value
    assert clean == local_clean > 0.8
    stored = TelemetryStore(ws.config.ledger_path).records()
    assert {r["client_id"] for r in stored} == {"rescan"} and len(stored) > 120
