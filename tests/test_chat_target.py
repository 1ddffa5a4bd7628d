"""`model.kind = "chat"` against real HTTP servers on 127.0.0.1 that misbehave on demand:
every bad answer is a `TargetError` that names the URL and the fix, never a traceback,
and the token never appears in an error, the options or the identity."""

from __future__ import annotations

import json
import secrets
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hardenml.cli import app
from hardenml.config import ConfigError, ModelConfig
from hardenml.targets import (
    ChatModel,
    ChatTarget,
    Message,
    TargetError,
    kind_options,
    load_chat_model,
    load_target,
    model_identity,
)
from hardenml.targets.chat_target import ChatOptions

TOKEN = f"chat-{secrets.token_hex(12)}"
TOKEN_ENV = "HARDENML_TEST_CHAT_TOKEN"
runner = CliRunner()


class FaultyChatServer:
    """Answers `POST /v1/chat/completions` with the last user turn reversed, or with the
    fault set in `fault`: "500", "malformed", "no-choices"; 401 without the right token
    (echoing the header it got, as careless servers do). Records the bodies it got."""

    def __init__(self) -> None:
        self.fault: str | None = None
        self.bodies: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, blob = owner.answer(self.path, self.headers.get("Authorization", ""), body)
                self.send_response(status)
                self.send_header("Content-Length", str(len(blob)))
                self.end_headers()
                self.wfile.write(blob)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def answer(self, path: str, authorization: str, body: bytes) -> tuple[int, bytes]:
        if authorization != f"Bearer {TOKEN}":
            return 401, f"unauthorized: got {authorization!r}".encode()
        if path != "/v1/chat/completions":
            return 404, b"not found"
        request = json.loads(body)
        self.bodies.append(request)
        if self.fault == "500":
            return 500, f"boom while handling {authorization}".encode()
        if self.fault == "malformed":
            return 200, b'{"choices": [{"message": '
        if self.fault == "no-choices":
            return 200, b'{"result": "hello"}'
        text = request["messages"][-1]["content"][::-1]
        return 200, json.dumps(
            {"choices": [{"message": {"role": "assistant", "content": text}}]}
        ).encode()

    def __enter__(self) -> FaultyChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[FaultyChatServer]:
    with FaultyChatServer() as running:
        yield running


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


def chat_model_config(base_url: str, **options: Any) -> ModelConfig:
    return ModelConfig.model_validate(
        {
            "name": "chat-under-test",
            "kind": "chat",
            "classes": ["unsafe", "safe"],
            "options": {
                "base_url": base_url,
                "token_env": TOKEN_ENV,
                "system_prompt": "Be brief.",
                "retries": 1,
                "backoff": 0.0,
                "timeout": 5.0,
                **options,
            },
        }
    )


def test_a_multi_turn_conversation_is_sent_whole_with_seed_and_token(
    server: FaultyChatServer,
) -> None:
    model = load_chat_model(chat_model_config(server.base_url, max_tokens=12))
    assert isinstance(model, ChatTarget) and isinstance(model, ChatModel)
    conversation = [
        Message("system", "Be brief."),
        Message("user", "hello"),
        Message("assistant", "hi"),
        Message("user", "abc"),
    ]
    assert model.reply(conversation, seed=5) == "cba"
    sent = server.bodies[-1]
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]
    assert sent["max_tokens"] == 12 and sent["seed"] == 5 and sent["temperature"] == 0.0
    assert model.queries == 1 and model.requests_sent == 1
    assert TOKEN not in repr(model)


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("500", "answered HTTP 500"),
        ("malformed", "malformed JSON"),
        ("no-choices", "choices[0].message.content"),
    ],
)
def test_bad_answers_are_target_errors_without_the_token(
    server: FaultyChatServer, fault: str, says: str
) -> None:
    server.fault = fault
    model = load_chat_model(chat_model_config(server.base_url))
    with pytest.raises(
        TargetError, match=r"POST http://127\.0\.0\.1:\d+/v1/chat/completions"
    ) as info:
        model.reply([Message("user", "hi")], seed=0)
    assert says in str(info.value) and TOKEN not in str(info.value)
    # A 500 is retried (retries = 1); a malformed answer is not a transport problem.
    assert model.requests_sent == (2 if fault == "500" else 1)


def test_a_wrong_token_is_a_401_that_names_token_env(
    server: FaultyChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "wrong-token")
    model = load_chat_model(chat_model_config(server.base_url))
    with pytest.raises(TargetError, match=r"401.*token_env") as info:
        model.reply([Message("user", "hi")], seed=0)
    assert "wrong-token" not in str(info.value)


def test_a_server_that_is_down_and_a_missing_token_are_clear_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    model = load_chat_model(chat_model_config(f"http://127.0.0.1:{port}"))
    with pytest.raises(TargetError, match=r"could not be reached.*connection refused"):
        model.reply([Message("user", "hi")], seed=0)
    monkeypatch.delenv(TOKEN_ENV)
    with pytest.raises(TargetError, match=f"export {TOKEN_ENV}="):
        load_chat_model(chat_model_config(f"http://127.0.0.1:{port}"))


def test_options_are_checked_by_key_and_identity_ignores_the_token() -> None:
    with pytest.raises(ConfigError, match=r"model.options.base_url"):
        kind_options(chat_model_config("http://127.0.0.1:1/v1/chat/completions"))
    with pytest.raises(ConfigError, match=r"model.options.headers"):
        kind_options(chat_model_config("http://127.0.0.1:1", headers={"Authorization": "x"}))
    with pytest.raises(ConfigError, match=r"model.options.temprature"):
        kind_options(chat_model_config("http://127.0.0.1:1", temprature=0.5))
    config = chat_model_config("http://127.0.0.1:1")
    identity = model_identity(config, None)
    assert identity == model_identity(chat_model_config("http://127.0.0.1:1", retries=5), None)
    assert identity != model_identity(
        chat_model_config("http://127.0.0.1:1", system_prompt="x"), None
    )
    assert ChatOptions(base_url="http://h:1/v1").endpoint == "http://h:1/v1/chat/completions"
    with pytest.raises(TargetError, match="answers conversations, not tensors"):
        load_target(config, None)


CHAT_WORKSPACE = """\
version = 1

[project]
name = "chat-test"

[model]
name = "{name}"
kind = "chat"
classes = ["unsafe", "safe"]

[model.options]
base_url = "{base_url}"
token_env = "{token_env}"
{options}

[[threats]]
name = "{threat}"
attack = "{attack}"
budgets = [1]
{threat_params}

[policy]
confidence = {confidence}

[[policy.robust]]
threat = "{threat}"
budget = 1
min_accuracy = {min_accuracy}
"""


def chat_workspace(
    folder: Path,
    base_url: str,
    *,
    name: str = "reverser",
    options: str = "retries = 0\ntimeout = 5.0",
    threat: str = "injection",
    attack: str = "prompt-injection",
    threat_params: str = "",
    confidence: float = 0.95,
    min_accuracy: float = 0.5,
) -> Path:
    """A workspace (hardenml.toml) for a chat model at `base_url`, one probe and its
    policy requirement."""
    folder.mkdir(parents=True, exist_ok=True)
    text = CHAT_WORKSPACE.format(
        name=name,
        base_url=base_url,
        token_env=TOKEN_ENV,
        options=options,
        threat=threat,
        attack=attack,
        threat_params=threat_params,
        confidence=confidence,
        min_accuracy=min_accuracy,
    )
    (folder / "hardenml.toml").write_text(text)
    return folder


def test_the_cli_scans_and_gates_a_chat_endpoint_and_names_what_is_wrong(
    server: FaultyChatServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(chat_workspace(tmp_path / "ws", server.base_url))
    scan = runner.invoke(app, ["scan"])
    # The reversing "model" repeats every injected marker (reversed): every probe fails.
    assert scan.exit_code == 0, scan.output
    assert "held in 0/6 conversations" in " ".join(scan.output.split())
    gate = runner.invoke(app, ["gate"])
    assert gate.exit_code == 1 and "Traceback" not in gate.output

    # The sanitiser removes every hidden instruction: 6/6 held, a significant gain.
    assert runner.invoke(app, ["patch", "--with", "chat-input-sanitizer"]).exit_code == 0
    (sanitiser,) = Path("artifacts/models").glob("*chat-input-sanitizer*.guards.json")
    checked = runner.invoke(app, ["validate", "configured", str(sanitiser), "--json"])
    assert checked.exit_code == 0, checked.output
    verdict = json.loads(checked.stdout)
    assert [c["passed"] for c in verdict["checks"]] == [True, True]
    # A filter that blocks every reply holding an "e" refuses ordinary requests too: the
    # benign check fails it, whatever it does to the probes.
    blunt = runner.invoke(app, ["patch", "--with", "chat-output-filter", "--set", 'secrets=["e"]'])
    assert blunt.exit_code == 0, blunt.output
    (blocker,) = Path("artifacts/models").glob("*chat-output-filter*.guards.json")
    refused = runner.invoke(app, ["validate", "configured", str(blocker), "--json"])
    assert refused.exit_code == 1, refused.output
    benign = json.loads(refused.stdout)["checks"][0]
    assert benign["name"].startswith("benign requests") and not benign["passed"]
    assert "detector refusal: false positives 0/20" in benign["reason"]

    server.fault = "500"
    broken = runner.invoke(app, ["scan"])
    assert broken.exit_code == 2 and "answered HTTP 500" in broken.output
    assert "Traceback" not in broken.output and TOKEN not in broken.output

    monkeypatch.chdir(chat_workspace(tmp_path / "tensor", server.base_url, attack="pgd"))
    tensor = runner.invoke(app, ["scan"])
    assert tensor.exit_code == 2 and "cannot run on a chat model" in tensor.output


def test_serve_chat_refuses_to_start_without_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARDENML_CHAT_TOKEN", raising=False)
    result = runner.invoke(app, ["serve-chat", "--port", "0"])
    assert result.exit_code == 2 and "export HARDENML_CHAT_TOKEN=" in result.output
