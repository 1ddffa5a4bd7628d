"""`model.kind = "http"` against a real JSON API on 127.0.0.1 serving a model trained here."""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits
from typer.testing import CliRunner

from hardenml import workflow
from hardenml.cli import app
from hardenml.config import ConfigError, ModelConfig
from hardenml.targets import InputSpec, TargetError, kind_options, load_target, model_identity
from hardenml.targets.http_target import HttpOptions, HttpTarget
from hardenml.targets.http_transport import HttpRequest, HttpResponse, StdlibTransport
from hardenml.threats.hopskipjump import HopSkipJump

CLASSES = [str(i) for i in range(10)]
TOKEN = f"tok-{secrets.token_hex(12)}"
TOKEN_ENV = "HARDENML_TEST_API_TOKEN"
runner = CliRunner()


class ModelServer:
    """A classifier behind `POST /predict`, on a free port of 127.0.0.1.

    It checks the bearer token (a 401 echoes the header it got, as careless servers do),
    counts requests, rows and client connections, and misbehaves on demand: `fault` is one
    of "500", "429", "hang", "malformed", "rows", "columns", "nan", "missing"; it lasts for
    `fault_count` requests (None: until cleared) or while `fault_if()` holds.
    """

    def __init__(self, model: Any, *, token: str | None = TOKEN, labels: bool = False) -> None:
        self.model = model
        self.token = token
        self.labels = labels
        self.single = False  # the API takes one input per request, not a list
        self.label_names = False
        self.fault: str | None = None
        self.fault_count: int | None = None
        self.fault_if: Callable[[], bool] | None = None
        self.retry_after = "0"
        self.hang_s = 1.0
        self.arrivals: list[float] = []
        self.rows: list[int] = []
        self.clients: set[int] = set()
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/predict"

    def __enter__(self) -> ModelServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _active_fault(self) -> str | None:
        with self.lock:
            if self.fault is None or (self.fault_if is not None and not self.fault_if()):
                return None
            if self.fault_count is not None:
                if self.fault_count <= 0:
                    return None
                self.fault_count -= 1
            return self.fault

    def answer(self, authorization: str, body: bytes, port: int) -> tuple[int, dict, bytes]:
        with self.lock:
            self.arrivals.append(time.monotonic())
            self.clients.add(port)
        if self.token is not None and authorization != f"Bearer {self.token}":
            return 401, {}, f"unauthorized: got {authorization!r}".encode()
        fault = self._active_fault()
        if fault == "500":
            return 500, {}, f"internal error handling {authorization!r}".encode()
        if fault == "429":
            return 429, {"Retry-After": self.retry_after}, b"slow down"
        if fault == "hang":
            time.sleep(self.hang_s)
        if fault == "malformed":
            return 200, {}, b'{"scores": [[0.1, '
        inputs = np.asarray(json.loads(body)["inputs"], dtype=np.float64)
        x = (inputs[None] if self.single else inputs).reshape(-1, 64)
        with self.lock:
            self.rows.append(len(x))
        if self.labels:
            labels = self.model.predict(x).tolist()
            labels = [CLASSES[i] for i in labels] if self.label_names else labels
            answer: dict[str, Any] = {"labels": labels[0] if self.single else labels}
        else:
            scores = self.model.predict_proba(x).tolist()
            if fault == "rows":
                scores = scores[:-1]
            if fault == "columns":
                scores = [row[:-1] for row in scores]
            if fault == "nan":
                scores[0][0] = float("nan")
            key = "probabilities" if fault == "missing" else "scores"
            answer = {key: scores[0] if self.single else scores, "version": "1"}
        return 200, {}, json.dumps(answer).encode()


def _handler(server: ModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a production server would

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status, headers, payload = server.answer(
                self.headers.get("Authorization", ""), body, self.client_address[1]
            )
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def model(digits: tuple[np.ndarray, ...]) -> LogisticRegression:
    x_train, y_train, _, _ = digits
    with threadpool_limits(1):  # BLAS threads fighting over 2 busy cores take seconds
        return LogisticRegression(max_iter=300).fit(x_train, y_train)


@pytest.fixture
def server(model: LogisticRegression) -> Iterator[ModelServer]:
    with ModelServer(model) as running:
        yield running


@pytest.fixture
def x_test(digits: tuple[np.ndarray, ...]) -> torch.Tensor:
    return torch.from_numpy(digits[2][:50])


def _target(url: str, *, token: str | None = TOKEN, **options: Any) -> HttpTarget:
    settings = {"timeout": 2.0, "retries": 1, "backoff": 0.01, **options}
    return HttpTarget(
        HttpOptions(url=url, **settings),
        input_spec=InputSpec(shape=(64,)),
        classes=CLASSES,
        token=token,
    )


def _flat(text: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(text.split())


def test_scores_match_the_local_model_and_batches_share_one_connection(server, model, x_test):
    target = _target(server.url, batch_size=16)
    probs = torch.softmax(target.logits(x_test).double(), 1).numpy()
    np.testing.assert_allclose(probs, model.predict_proba(x_test.double().numpy()), atol=1e-6)
    assert server.rows == [16, 16, 16, 2]
    assert target.requests_sent == 4 and target.queries == 50
    assert len(server.clients) == 1  # kept alive: one connection for all four requests


@pytest.mark.parametrize("names", [False, True], ids=["indices", "class-names"])
def test_labels_mode_is_one_hot_of_the_served_label(model, x_test, names: bool):
    with ModelServer(model, labels=True) as server:
        server.label_names = names
        target = _target(server.url, response="labels")
        logits = target.logits(x_test)
    assert target.predict(x_test).shape == (50,)
    served = model.predict(x_test.double().numpy())
    assert logits.argmax(1).tolist() == served.tolist()
    assert torch.softmax(logits.double(), 1).amax(1).min() > 1 - 1e-9  # labels only


def test_a_decision_based_threat_runs_on_labels_and_every_query_is_counted(model, x_test):
    with ModelServer(model, labels=True) as server:
        target = _target(server.url, response="labels", batch_size=256)
        x, y = x_test[:6], torch.from_numpy(model.predict(x_test[:6].double().numpy()))
        threat = HopSkipJump(queries=80, steps=3, init_evals=10, max_evals=20, init_tries=10)
        result = threat(target, x, y, budget=2.0, generator=torch.Generator().manual_seed(0))
    assert result.queries == target.queries == sum(server.rows) > 6 * 10
    assert result.x_adv.shape == x.shape and result.success.any()


def test_single_input_api_gets_one_unnested_input_per_request(server, model, x_test):
    server.single = True
    target = _target(server.url, batched=False)
    assert target.predict(x_test[:3]).tolist() == model.predict(x_test[:3].numpy()).tolist()
    assert server.rows == [1, 1, 1] and target.requests_sent == 3


def test_the_token_is_sent_checked_and_never_shown(server, x_test, monkeypatch):
    cfg = ModelConfig.model_validate(
        {
            "name": "api",
            "kind": "http",
            "classes": CLASSES,
            "input": {"shape": [64]},
            "options": {"url": server.url, "token_env": TOKEN_ENV, "retries": 2, "backoff": 0.01},
        }
    )
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(TargetError, match=f"{TOKEN_ENV}.*not set"):
        load_target(cfg, None)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    target = load_target(cfg, None)
    assert target.predict(x_test[:4]).shape == (4,)  # the server accepted the token
    assert TOKEN not in repr(target) + repr(kind_options(cfg))

    server.token = "another-token"  # now ours is wrong; the 401 body echoes it back
    with pytest.raises(TargetError) as caught:
        target.logits(x_test[:4])
    message = str(caught.value)
    assert "HTTP 401" in message and server.url in message and "token_env" in message
    assert TOKEN not in message and "***" in message
    assert server.arrivals and len(server.arrivals) == 2  # 4xx is not retried


class TimedTransport(StdlibTransport):
    """The real transport, noting when each request leaves (the server's clock would add
    its threads' scheduling delays to the gaps)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[float] = []

    def send(self, request: HttpRequest) -> HttpResponse:
        self.sent.append(time.monotonic())
        return super().send(request)


def test_rate_limit_spaces_the_requests(server, x_test):
    transport = TimedTransport()
    target = HttpTarget(
        HttpOptions(url=server.url, batch_size=5, rate_limit=40.0),
        input_spec=InputSpec(shape=(64,)),
        classes=CLASSES,
        token=TOKEN,
        transport=transport,
    )
    target.logits(x_test[:30])
    gaps = np.diff(transport.sent)
    assert len(gaps) == 5 and gaps.min() >= 1 / 40 - 1e-4
    assert len(server.rows) == 6


def test_query_budget_stops_with_the_count_and_the_key(server, x_test):
    target = _target(server.url, query_budget=30)
    target.logits(x_test[:20])
    with pytest.raises(TargetError) as caught:
        target.logits(x_test[20:40])
    message = str(caught.value)
    assert "model.options.query_budget = 30" in message and "20 inputs were sent" in message
    assert "needs 20 more" in message
    assert sum(server.rows) == 20  # the refused call sent nothing


def test_5xx_is_retried_with_backoff_and_429_waits_for_retry_after(server, x_test):
    server.fault, server.fault_count = "500", 2
    target = _target(server.url, retries=2, backoff=0.05)
    started = time.monotonic()
    assert target.predict(x_test[:4]).shape == (4,)
    assert target.requests_sent == 3 and time.monotonic() - started >= 0.05 + 0.1

    server.fault, server.fault_count, server.retry_after = "429", 1, "1"
    target = _target(server.url, retries=1, backoff=0.0)
    started = time.monotonic()
    target.logits(x_test[:4])
    assert target.requests_sent == 2 and time.monotonic() - started >= 0.95


def _refused_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/predict"  # nothing listens there any more


@pytest.mark.parametrize(
    ("fault", "problem"),
    [
        ("hang", "timed out"),
        ("500", "HTTP 500"),
        ("malformed", "malformed JSON"),
        ("rows", "returned 49 rows under 'scores' for 50 inputs"),
        ("columns", "not 50 rows of 10 numbers"),
        ("nan", "NaN or infinite scores for 1 of 50"),
        ("missing", "without the field 'scores'"),
        ("refused", "connection refused"),
    ],
)
def test_a_misbehaving_server_gets_a_clear_error(server, x_test, fault: str, problem: str):
    server.fault, server.hang_s = fault, 0.5
    url = _refused_url() if fault == "refused" else server.url
    target = _target(url, timeout=0.1, retries=1)
    with pytest.raises(TargetError) as caught:
        target.logits(x_test)
    message = str(caught.value)
    assert problem in message and url in message and TOKEN not in message
    retried = fault in ("hang", "500", "refused")
    assert target.requests_sent == (2 if retried else 1)


HTTP_CONFIG = """\
version = 1

[project]
name = "http-test"

[model]
name = "digits-api"
kind = "http"
classes = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]

[model.input]
shape = [1, 8, 8]

[model.options]
url = "{url}"
token_env = "{token_env}"
timeout = 0.3
retries = 1
backoff = 0.01
{options}

[data]
source = "digits"
test_fraction = 0.25
seed = 0
max_samples = 60

[scan]
batch_size = 20

[[threats]]
name = "square"
attack = "{attack}"
budgets = [0.1]
{threat_keys}

[[threats]]
name = "noise"
attack = "gaussian-noise"
budgets = [3]

[policy]
min_clean_accuracy = 0.8

[[policy.robust]]
threat = "square"
budget = 0.1
min_accuracy = 0.99

[integrity]
enabled = false
"""


def _workspace(
    folder: Path,
    url: str,
    *,
    options: str = "",
    attack: str = "square",
    threat_keys: str = "queries = 15",
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "hardenml.toml"
    config.write_text(
        HTTP_CONFIG.format(
            url=url, token_env=TOKEN_ENV, options=options, attack=attack, threat_keys=threat_keys
        )
    )
    return config


def _scan(config: Path) -> Any:
    return runner.invoke(app, ["scan", "--config", str(config)], catch_exceptions=False)


def _workspace_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


@pytest.mark.slow
def test_scan_and_gate_end_to_end_record_the_queries_and_never_the_token(
    server, tmp_path: Path, monkeypatch
):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    config = _workspace(tmp_path / "ws", server.url)
    scan = _scan(config)
    assert scan.exit_code == 0, scan.output
    assert "robust_accuracy[square@0.1]" in scan.output and "noise@3" in scan.output
    gate = runner.invoke(app, ["gate", "--config", str(config)], catch_exceptions=False)
    assert gate.exit_code == 1, gate.output  # Square fools the model: the policy fails
    assert "GATE FAILED" in gate.output

    ws = workflow.Workspace.open(config)
    (run,) = ws.ledger.events(["run.completed"])
    assert run.payload["scan"]["queries"] == sum(server.rows) > 60 * 3
    assert run.payload["model_sha256"] == ws.model_sha256()
    kinds = [e.kind for e in ws.ledger.events()]
    assert kinds.count("finding.opened") >= 1 and kinds[-1] == "gate.decided"
    assert list((tmp_path / "ws" / "reports").iterdir()), "reports were written"
    assert TOKEN.encode() not in _workspace_bytes(tmp_path / "ws")
    assert TOKEN not in scan.output + gate.output


@pytest.mark.parametrize(
    ("fault", "problem"),
    [
        ("hang", "timed out"),
        ("500", "HTTP 500"),
        ("malformed", "malformed JSON"),
        ("rows", "rows under 'scores' for 8 inputs"),
    ],
)
def test_a_misbehaving_server_stops_the_scan_with_exit_2(
    server, tmp_path: Path, monkeypatch, fault: str, problem: str
):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    server.fault = fault
    result = _scan(_workspace(tmp_path / "ws", server.url))
    output = _flat(result.output)
    assert result.exit_code == 2, output
    assert "error:" in output and problem in output and server.url in output
    assert "Traceback" not in output and TOKEN not in output


@pytest.mark.parametrize(
    ("options", "attack", "message"),
    [
        ("query_budget = 5", "square", "model.options.query_budget = 5"),
        ("", "pgd", "square, square-l2, tabular-blackbox"),
        ('headers = { Authorization = "Bearer x" }', "square", "token_env"),
        ("batch_sise = 8", "square", "model.options.batch_sise"),
    ],
    ids=["query-budget", "gradient-threat", "secret-header", "unknown-option"],
)
def test_bad_http_settings_exit_2_with_the_key(
    server, tmp_path: Path, monkeypatch, options: str, attack: str, message: str
):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    keys = "steps = 2" if attack == "pgd" else "queries = 15"
    config = _workspace(
        tmp_path / "ws", server.url, options=options, attack=attack, threat_keys=keys
    )
    result = _scan(config)
    assert result.exit_code == 2, result.output
    assert message in _flat(result.output) and "Traceback" not in result.output


@pytest.mark.slow
def test_a_scan_the_server_broke_resumes_once_it_recovers(server, tmp_path: Path, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    config = _workspace(tmp_path / "ws", server.url)
    checkpoints = tmp_path / "ws" / "artifacts" / "checkpoints"
    # The server fails from the moment the scan has checkpointed its first batch.
    server.fault = "500"
    server.fault_if = lambda: any(checkpoints.glob("*/batch-*.npz"))
    broken = _scan(config)
    assert broken.exit_code == 2 and "HTTP 500" in _flat(broken.output)
    assert len(list(checkpoints.glob("*/batch-*.npz"))) == 1
    assert not workflow.Workspace.open(config).ledger.events(["run.completed"])

    server.fault = None  # recovered
    resumed = _scan(config)
    assert resumed.exit_code == 0, resumed.output
    assert "resuming: 1 of 3 batches already done" in resumed.output
    (run,) = workflow.Workspace.open(config).ledger.events(["run.completed"])
    assert run.payload["scan"]["batches_resumed"] == 1

    fresh = workflow.scan(workflow.Workspace.open(_workspace(tmp_path / "fresh", server.url)))
    assert run.payload["measurements"] == [m.as_dict() for m in fresh.measurements]
    assert 0 < run.payload["scan"]["queries"] < fresh.queries  # batch 0 was not re-sent


def test_identity_follows_the_model_not_the_pacing_nor_the_token():
    def identity(**options: Any) -> str:
        cfg = ModelConfig.model_validate(
            {
                "name": "api",
                "kind": "http",
                "classes": CLASSES,
                "input": {"shape": [64]},
                "options": {"url": "http://127.0.0.1:9/predict", **options},
            }
        )
        return model_identity(cfg, None)

    base = identity()
    assert base == identity(query_budget=10, rate_limit=5, retries=0, timeout=1, batch_size=4)
    assert base == identity(token_env="SOME_OTHER_VARIABLE")
    assert base != identity(url="http://127.0.0.1:9/v2/predict")
    assert base != identity(response="labels")
    assert base != identity(headers={"X-Model-Version": "2"})


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"url": "ftp://host/x"}, "model.options.url"),
        ({"url": "http://user:pw@127.0.0.1/x"}, "model.options.url"),
        ({"url": "http://127.0.0.1/x", "batched": False, "batch_size": 8}, "model.options"),
        ({"url": "http://127.0.0.1/x", "response": "probs"}, "model.options.response"),
        ({}, "model.options.url"),
    ],
    ids=["scheme", "credentials-in-url", "batched-false-with-batch-size", "response", "no-url"],
)
def test_bad_options_are_config_errors_naming_the_key(options: dict[str, Any], key: str):
    cfg = ModelConfig.model_validate(
        {
            "name": "api",
            "kind": "http",
            "classes": CLASSES,
            "input": {"shape": [64]},
            "options": options,
        }
    )
    with pytest.raises(ConfigError) as caught:
        kind_options(cfg)
    assert key in str(caught.value)
