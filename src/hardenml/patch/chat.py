"""The base of patches for chat models: a guard that wraps the deployed `ChatModel`.

A chat model has no weights here to retrain; its defences are guards around it, on the
way in (what users send) and on the way out (what the model answers). A `ChatPatch`
builds such a wrapper with `wrap`, and its effect is measured as every patch's is: by
running the same prompt probes against the wrapped model and comparing pass rates.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from hardenml.patch.base import Patch, PatchContext, PatchError, PatchResult
from hardenml.targets import ChatModel, Message


class ChatPatch(Patch):
    """A guard for `model.kind = "chat"`; subclasses write `wrap`."""

    kinds: ClassVar[tuple[str, ...]] = ("chat",)
    addresses: ClassVar[tuple[str, ...]] = ("prompt",)

    @abstractmethod
    def wrap(self, model: ChatModel) -> ChatModel:
        """`model` behind this guard."""

    def run(self, ctx: PatchContext) -> PatchResult:
        raise PatchError(
            f"{type(self).__name__} guards a chat model (model.kind = 'chat'): it wraps the "
            "model with `wrap`, it trains nothing on tensors"
        )


class GuardedChat(ChatModel):
    """A chat model behind a guard: `inner` answers, the guard rewrites what passes."""

    def __init__(self, inner: ChatModel) -> None:
        self._inner = inner
        self.system_prompt = inner.system_prompt
        # Conversations the guard changed (inputs rewritten or replies blocked).
        self.interventions = 0

    @property
    def inner(self) -> ChatModel:
        return self._inner

    @property
    def queries(self) -> int:
        return self._inner.queries

    @queries.setter
    def queries(self, value: int) -> None:
        self._inner.queries = value

    def reply(self, messages: Sequence[Message], *, seed: int) -> str:
        return self._inner.reply(messages, seed=seed)
