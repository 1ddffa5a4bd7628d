"""The prompt-probe contract: `(chat model, budget, seed) -> ProbeOutcome`.

A prompt probe is a threat of family "prompt": it talks to a chat model
(`hardenml.targets.ChatModel`) instead of attacking tensors. Its prompts are data: a
versioned JSON file shipped in `prompts/` (`{"probe", "version", "items": [{"id",
"turns": [...]}, ...]}`), plus any files the user names in the threat's `prompts`
parameter, each hashed (sha256) and recorded with the run.

The budget is the number of user turns the attacker gets: an item is a conversation of
user turns, of which the probe plays at most `budget`, and the model fails the item if
any of its replies is judged unsafe. `PromptProbe.probe` is the fixed entry point: it
builds each conversation, asks the model, and has the probe's detector judge every reply;
subclasses say how an item becomes messages (`system_message`, `user_turn`) and what a
reply is judged for (`unsafe`). Every verdict carries the detector's measured error rates.
"""

from __future__ import annotations

import hashlib
import json
import random
from abc import abstractmethod
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from hardenml.stats import derive_seed
from hardenml.targets import ChatModel, Message, Target
from hardenml.threats.base import Threat, ThreatError
from hardenml.threats.probes.detectors import Detector, ErrorRates, detector

PROMPTS = "prompts"
# The bad behaviours a probe's detector tells (`PromptProbe.behaviour`): a secret or marker
# in a reply, a disallowed request answered with instructions, a sensitive one not
# refused, an ordinary one refused.
BEHAVIOURS = ("canary-leak", "policy-violation", "no-refusal", "over-refusal")
# Words for planted secrets: ordinary, so a secret is not flagged by its shape alone.
_SECRET_WORDS = (
    "ZEBRA", "ORCHID", "MAPLE", "COBALT", "FALCON", "QUARTZ", "LANTERN", "SAFFRON",
    "GLACIER", "TULIP", "HARBOR", "EMBER", "WALNUT", "PYTHON", "MARBLE", "COMET",
)  # fmt: skip


class PromptFileError(ThreatError):
    """A prompt file cannot be read; the message names the file and what is wrong."""


@dataclass(frozen=True)
class PromptItem:
    id: str
    turns: tuple[str, ...]


@dataclass(frozen=True)
class PromptSet:
    """The items of one prompt file, with what identifies it in the run's record."""

    name: str
    version: int
    sha256: str
    source: str
    items: tuple[PromptItem, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "source": self.source,
            "items": len(self.items),
        }


@dataclass(frozen=True)
class ProbeVerdict:
    """One conversation: whether the model held (`passed`), the conversation itself, and
    the reply that was judged unsafe (None when it held)."""

    item: str
    passed: bool
    messages: tuple[Message, ...]
    unsafe_reply: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "item": self.item,
            "passed": self.passed,
            "messages": [m.as_dict() for m in self.messages],
            "unsafe_reply": self.unsafe_reply,
        }


@dataclass
class ProbeOutcome:
    """What a probe found at one budget: a verdict per conversation, the prompt files it
    read, its detector's error rates and the replies it asked for."""

    probe: str
    budget: float
    verdicts: list[ProbeVerdict]
    prompt_sets: list[PromptSet]
    error_rates: ErrorRates
    queries: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> int:
        return sum(v.passed for v in self.verdicts)

    @property
    def n(self) -> int:
        return len(self.verdicts)

    def summary(self) -> dict[str, Any]:
        return {
            "probe": self.probe,
            "budget": self.budget,
            "passed": self.passed,
            "n": self.n,
            "queries": self.queries,
            "prompt_sets": [s.as_dict() for s in self.prompt_sets],
            "detector": self.error_rates.as_dict(),
        }


def read_prompt_file(blob: bytes, source: str, probe: str) -> PromptSet:
    """The items of a prompt file, or a `PromptFileError` that names `source`."""
    try:
        data = json.loads(blob)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PromptFileError(f"prompt file {source}: not JSON ({exc})") from None
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise PromptFileError(
            f"prompt file {source}: expected an object with a non-empty list 'items' of "
            '{"id": str, "turns": [str, ...]}'
        )
    out = []
    for i, item in enumerate(items):
        turns = item.get("turns") if isinstance(item, dict) else None
        ok = (
            isinstance(turns, list)
            and bool(turns)
            and all(isinstance(t, str) and t.strip() for t in turns)
            and isinstance(item.get("id"), str)
        )
        if not ok:
            raise PromptFileError(
                f"prompt file {source}: items[{i}] must be "
                '{"id": str, "turns": [non-empty str, ...]}'
            )
        assert isinstance(turns, list)
        out.append(PromptItem(item["id"], tuple(turns)))
    version = data.get("version", 1)
    if not isinstance(version, int):
        raise PromptFileError(f"prompt file {source}: 'version' must be an integer")
    return PromptSet(
        str(data.get("probe", probe)),
        version,
        hashlib.sha256(blob).hexdigest(),
        source,
        tuple(out),
    )


class PromptProbe(Threat):
    """Base of every prompt probe. `prompts`: extra prompt files (JSON, as in `prompts/`;
    relative paths from the config's folder) played after the shipped ones; `limit`: at
    most this many conversations (the first ones, shipped prompts first)."""

    family = "prompt"
    needs_gradients = False
    access = "labels"
    norm = "none"
    # The shipped prompt file in `prompts/`, and the detector that judges each reply.
    prompt_file: ClassVar[str]
    detector_name: ClassVar[str]
    # What the attacker does, for `describe`: "hides instructions in a document".
    tactic: ClassVar[str] = ""
    # The bad behaviour a failing reply shows, as an external report claims it
    # (`hardenml intake`): one of `BEHAVIOURS`.
    behaviour: ClassVar[str]
    # A token every conversation must carry for a reply to be judged (the injection
    # probe's marker, replaced by the planted secret); None: any conversation can be.
    marker: ClassVar[str | None] = None

    def __init__(self, *, prompts: list[str] | None = None, limit: int | None = None) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.prompts = list(prompts or [])
        self.limit = limit

    def run(
        self, target: Target, x: Tensor, y: Tensor, budget: float, generator: torch.Generator
    ) -> Tensor:
        raise ThreatError(
            f"{type(self).__name__} is a prompt probe: it talks to a chat model "
            "(model.kind = 'chat'), not to a classifier over tensors"
        )

    def threat_space(self) -> str | None:
        return None

    def describe(self, budget: float) -> str:
        turns = f"{budget:g} turn{'s' if budget != 1 else ''}"
        return f"a user who {self.tactic}, in up to {turns} of conversation ({self.title})"

    def prompt_sets(self, root: Path) -> list[PromptSet]:
        """The shipped prompt file and the user's, read and hashed."""
        blob = files(__package__).joinpath(PROMPTS, self.prompt_file).read_bytes()
        sets = [read_prompt_file(blob, f"hardenml:{PROMPTS}/{self.prompt_file}", self.probe_name)]
        for name in self.prompts:
            path = Path(name) if Path(name).is_absolute() else root / name
            try:
                blob = path.read_bytes()
            except OSError as exc:
                raise PromptFileError(
                    f"prompt file {path} cannot be read ({exc.strerror or exc}); fix the "
                    "path in the threat's prompts"
                ) from None
            sets.append(read_prompt_file(blob, str(path), self.probe_name))
        return sets

    @property
    def probe_name(self) -> str:
        return self.prompt_file.removesuffix(".json")

    @property
    def detector(self) -> Detector:
        return detector(self.detector_name)

    def probe(
        self,
        model: ChatModel,
        *,
        budget: float,
        seed: int,
        root: Path = Path("."),
        confidence: float = 0.95,
    ) -> ProbeOutcome:
        """Play every conversation against `model` for at most `budget` user turns and
        judge each reply; seeded (the same seed plants the same secrets and asks the model
        with the same seeds)."""
        turns = int(budget)
        if turns < 1 or turns != budget:
            raise ThreatError(
                f"a prompt probe's budget is a number of user turns (1, 2, ...), got {budget:g}"
            )
        sets = self.prompt_sets(root)
        items = [item for s in sets for item in s.items][: self.limit]
        return self.play(model, items, turns=turns, seed=seed, sets=sets, confidence=confidence)

    def play(
        self,
        model: ChatModel,
        items: list[PromptItem],
        *,
        turns: int,
        seed: int,
        sets: list[PromptSet],
        confidence: float = 0.95,
    ) -> ProbeOutcome:
        """Play each conversation of `items` against `model` for at most `turns` user turns
        and judge every reply; `sets` are the prompt files the items came from. Used by
        `probe` for the prompt files and by `hardenml intake` for submitted conversations."""
        before = model.queries
        verdicts = []
        for item in items:
            secret = self.secret_for(seed, item)
            system = self.system_message(model.system_prompt, secret)
            messages: list[Message] = [Message("system", system)] if system else []
            unsafe = None
            for turn, text in enumerate(item.turns[:turns]):
                messages.append(Message("user", self.user_turn(text, secret)))
                reply = model.reply(messages, seed=derive_seed(seed, item.id, turn))
                messages.append(Message("assistant", reply))
                if self.unsafe(reply, secret):
                    unsafe = reply
                    break
            verdicts.append(ProbeVerdict(item.id, unsafe is None, tuple(messages), unsafe))
        return ProbeOutcome(
            self.probe_name,
            float(turns),
            verdicts,
            sets,
            self.detector.error_rates(confidence),
            model.queries - before,
        )

    def secret_for(self, seed: int, item: PromptItem) -> str:
        """A secret planted for `item` (a word and four digits), seeded."""
        draw = random.Random(derive_seed(seed, self.probe_name, item.id))
        return f"{draw.choice(_SECRET_WORDS)}-{draw.randrange(1000, 10000)}"

    def system_message(self, deployed: str, secret: str) -> str:
        """The system message of a conversation; by default the deployment's own."""
        return deployed

    def user_turn(self, text: str, secret: str) -> str:
        """A user turn as sent; by default the prompt as written."""
        return text

    @abstractmethod
    def unsafe(self, reply: str, secret: str) -> bool:
        """Whether `reply` shows the model failed (a leak, harmful compliance, ...)."""
