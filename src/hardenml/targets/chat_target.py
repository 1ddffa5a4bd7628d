"""A chat model behind the OpenAI-compatible chat-completions API: `model.kind = "chat"`.

Every reply is one `POST {base_url}/v1/chat/completions` with the body
`{"model": ..., "messages": [{"role": ..., "content": ...}, ...], "max_tokens": ...,
"temperature": ..., "seed": ...}`; the answer's `choices[0].message.content` is the reply.
Any serving stack that speaks this subset works (vLLM, llama.cpp's server, TGI,
`transformers serve`, hosted APIs, `hardenml serve-chat`). A conversation is the whole
list of messages, so multi-turn probes send the earlier turns, replies included.

`system_prompt` is the deployment's own system prompt: the model is tested as it is
deployed. The token (`token_env`), timeout, retries with backoff and the rate limit are
those of every network kind (`http_client.EndpointClient`).

A chat model answers text, not tensors: it has no `logits`, so it is not a `Target` and
tensor attacks and patches do not apply to it. Prompt threats (family "prompt",
`hardenml.threats.probes`) probe it through `ChatModel.reply`.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hardenml.config import ModelConfig
from hardenml.targets.base import Target, TargetError
from hardenml.targets.http_client import (
    EndpointClient,
    checked_headers,
    checked_url,
    excerpt,
    token_from_env,
)
from hardenml.targets.http_transport import Transport
from hardenml.targets.kinds import TargetKind

Role = Literal["system", "user", "assistant"]
# The options that say which model answers and how: they make up the target's identity.
# The token, timeouts, retries and the rate limit only change how it is asked.
IDENTITY_OPTIONS = ("base_url", "model", "system_prompt", "max_tokens", "temperature", "headers")


@dataclass(frozen=True)
class Message:
    """One turn of a conversation."""

    role: Role
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


class ChatModel(ABC):
    """What a prompt probe sees of a chat model: its deployed system prompt and replies.

    `reply(messages, seed=...)` returns the assistant's next message for the conversation
    `messages` (the system message first, when there is one). `queries` counts replies.
    Wrappers (the chat patches) subclass this and hold the model they wrap in `inner`.
    """

    system_prompt: str
    queries: int

    @abstractmethod
    def reply(self, messages: Sequence[Message], *, seed: int) -> str: ...

    @property
    def inner(self) -> ChatModel | None:
        return None


class ChatOptions(BaseModel):
    """`[model.options]` of `model.kind = "chat"`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str
    model: str = Field(default="default", min_length=1)
    system_prompt: str = ""
    headers: dict[str, str] = Field(default_factory=dict)
    token_env: str | None = None
    timeout: float = Field(default=120.0, gt=0)
    retries: int = Field(default=2, ge=0)
    backoff: float = Field(default=0.5, ge=0)
    rate_limit: float | None = Field(default=None, gt=0)
    max_tokens: int = Field(default=48, gt=0)
    # 0: greedy decoding, so a rerun with the same seed gets the same replies.
    temperature: float = Field(default=0.0, ge=0)
    query_budget: int | None = Field(default=None, gt=0)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if urlsplit(checked_url(url)).path.rstrip("/").endswith("/chat/completions"):
            raise ValueError(
                f"the server's base URL, without /v1/chat/completions (got {url!r}); "
                "the target adds the path"
            )
        return url.rstrip("/")

    @field_validator("headers")
    @classmethod
    def _no_secret_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        return checked_headers(headers)

    @property
    def endpoint(self) -> str:
        base = self.base_url
        return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"


class ChatTarget(ChatModel):
    """The chat model at `options.base_url`; `queries` counts replies received,
    `requests_sent` every HTTP request (retries included)."""

    def __init__(
        self,
        options: ChatOptions,
        *,
        token: str | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.options = options
        self.system_prompt = options.system_prompt
        self.queries = 0
        self.client = EndpointClient(
            options.endpoint,
            options,
            token=token,
            transport=transport,
            hints={
                404: "; check model.options.base_url (the target POSTs to /v1/chat/completions)",
                400: "; check model.options.model and max_tokens against what the server takes",
                422: "; check model.options.model and max_tokens against what the server takes",
            },
        )

    def __repr__(self) -> str:
        return f"ChatTarget(base_url={self.options.base_url!r}, model={self.options.model!r})"

    @property
    def requests_sent(self) -> int:
        return self.client.requests_sent

    def reply(self, messages: Sequence[Message], *, seed: int) -> str:
        budget = self.options.query_budget
        if budget is not None and self.queries + 1 > budget:
            raise TargetError(
                f"the query budget model.options.query_budget = {budget} is spent: "
                f"{self.queries} replies came from {self.options.base_url} in this scan. "
                "Raise model.options.query_budget or declare fewer prompts"
            )
        if not messages or messages[-1].role != "user":
            raise TargetError("a conversation sent to a chat model must end with a user turn")
        body = {
            "model": self.options.model,
            "messages": [m.as_dict() for m in messages],
            "max_tokens": self.options.max_tokens,
            "temperature": self.options.temperature,
            "seed": seed,
        }
        answer = self.client.post_json(body)
        content = _reply_content(answer)
        if content is None:
            raise self.client.error(
                "answered without choices[0].message.content (a string), as the "
                f"chat-completions API returns it: {excerpt(json.dumps(answer))}"
            )
        self.queries += 1
        return content


def _reply_content(answer: Any) -> str | None:
    if not isinstance(answer, dict):
        return None
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else None


class ChatKind(TargetKind):
    """`model.kind = "chat"`: a chat model behind the chat-completions API (see
    `ChatOptions`). Scanned with prompt threats through `connect`; `load` refuses, since a
    chat model has no tensor interface for attacks and tensor patches to use."""

    needs_file = False
    # Conversations, not tensors, and the probes' own prompt files, not a dataset.
    reads_input = False
    reads_data = False
    options = ChatOptions
    description = "a chat model behind an OpenAI-compatible /v1/chat/completions API"

    def identity(self, model: ModelConfig, path: Path | None, options: Any) -> str:
        """sha256 over the URL, the served model's name, the system prompt and the
        decoding settings: never the token, nor the settings that only pace the queries."""
        fields = options.model_dump(mode="json", include=set(IDENTITY_OPTIONS))
        body = json.dumps({"kind": "chat", **fields}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()

    def load(self, model: ModelConfig, path: Path | None, options: Any, *, trust: bool) -> Target:
        raise TargetError(
            f"model.kind 'chat' ({model.name}) answers conversations, not tensors: it is "
            "scanned with prompt threats (family 'prompt') and patched with the chat patches "
            "(chat-input-sanitizer, chat-output-filter); tensor attacks and patches do not apply"
        )

    def connect(self, options: ChatOptions, *, transport: Transport | None = None) -> ChatTarget:
        """The chat model `options` name, with its token read from the environment."""
        return ChatTarget(options, token=token_from_env(options.token_env), transport=transport)
