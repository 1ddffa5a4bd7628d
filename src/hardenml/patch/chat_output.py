"""An output filter for chat models: no reply may carry a secret of the system prompt.

Every reply is checked, before it leaves, for the secrets of the conversation's system
message (tokens that mix letters and digits, like access codes and keys, plus the
`secrets` given) with the canary-leak detector, so obfuscated leaks (spaced, reversed,
base64, hex, other case) are caught as well as exact ones, and for verbatim runs of the
system prompt (`copied_words` words in a row). A reply that leaks is replaced by
`refusal`. The detector's measured error rates bound what it misses.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from hardenml.patch.chat import ChatPatch, GuardedChat
from hardenml.targets import ChatModel, Message
from hardenml.threats.probes.detectors import CanaryLeak

# Tokens of a system prompt treated as secrets: 6+ characters mixing letters and digits
# (access codes, keys, account numbers), joined by - or _ as such codes usually are.
_SECRET_LIKE = re.compile(r"\b(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9][\w-]{5,}\b")


class OutputFilter(GuardedChat):
    def __init__(
        self, inner: ChatModel, *, secrets: Sequence[str], refusal: str, copied_words: int
    ) -> None:
        super().__init__(inner)
        self.secrets = tuple(secrets)
        self.refusal = refusal
        self.copied_words = copied_words
        self.detector = CanaryLeak()

    def reply(self, messages: Sequence[Message], *, seed: int) -> str:
        answer = self.inner.reply(messages, seed=seed)
        system = " ".join(m.content for m in messages if m.role == "system")
        secrets = {*self.secrets, *_SECRET_LIKE.findall(system)}
        leaks = any(self.detector.flags(answer, secret=s) for s in secrets)
        if leaks or _copies(system, answer, self.copied_words):
            self.interventions += 1
            return self.refusal
        return answer


def _copies(system: str, answer: str, run: int) -> bool:
    """Whether `answer` repeats `run` consecutive words of `system` (case-insensitive)."""
    words = re.findall(r"\w+", system.lower())
    said = " " + " ".join(re.findall(r"\w+", answer.lower())) + " "
    return any(f" {' '.join(words[i : i + run])} " in said for i in range(len(words) - run + 1))


class ChatOutputFilter(ChatPatch):
    """Block replies that leak a system-prompt secret or copy the system prompt.

    `secrets`: strings to protect besides the code-like tokens of the system prompt;
    `refusal`: what is sent instead; `copied_words`: the length of a verbatim run of the
    system prompt that counts as a leak (at least 4)."""

    summary = "blocks replies that leak system-prompt secrets, exact or obfuscated"

    def __init__(
        self,
        *,
        secrets: list[str] | None = None,
        refusal: str = "I can't share that.",
        copied_words: int = 8,
    ) -> None:
        if copied_words < 4:
            raise ValueError(f"copied_words must be at least 4, got {copied_words}")
        self.secrets = list(secrets or [])
        self.refusal = refusal
        self.copied_words = copied_words

    def wrap(self, model: ChatModel) -> ChatModel:
        return OutputFilter(
            model, secrets=self.secrets, refusal=self.refusal, copied_words=self.copied_words
        )
