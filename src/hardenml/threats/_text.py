"""What the text threats share: the base that decodes and encodes, words and their spans,
stop words, the seeded random source and the score queries under a budget.

A text threat edits strings, not numbers: `TextThreat.run` decodes the code-point rows
(`hardenml.targets.text_codec`), hands the strings to `attack_text` one at a time, and
encodes what comes back. Edits that would not fit the model's width are never proposed.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from hardenml.targets import Target
from hardenml.targets.text_codec import decode_texts, encode_tensor, fits
from hardenml.threats.base import Access, Family, Norm, Threat, ThreatError

# Letters with an optional apostrophe part ("don't", "film's"); everything else is kept.
WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def word_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every word of `text`, in order."""
    return [match.span() for match in WORD.finditer(text)]


def replace_span(text: str, span: tuple[int, int], new: str) -> str:
    return text[: span[0]] + new + text[span[1] :]


def stop_words() -> frozenset[str]:
    """scikit-learn's English stop words (318, negations included): never substituted, as
    in TextFooler, so that an attack cannot flip a review by deleting its "not"."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def rng_from(generator: torch.Generator) -> np.random.Generator:
    """A numpy generator seeded from one draw of the threat's torch generator."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    return np.random.default_rng(seed)


@dataclass
class Scorer:
    """Score queries for one input, counted against `max_queries`; `probabilities` returns
    None once the budget cannot pay for the whole batch."""

    target: Target
    label: int
    max_queries: int
    used: int = 0

    @property
    def left(self) -> int:
        return self.max_queries - self.used

    def probabilities(self, texts: list[str]) -> np.ndarray | None:
        """Softmax outputs `(len(texts), k)`, or None past the query budget."""
        if not texts:
            return np.zeros((0, len(self.target.classes)))
        if len(texts) > self.left:
            return None
        self.used += len(texts)
        with torch.no_grad():
            logits = self.target.logits(encode_tensor(texts, self.target.input_spec.shape[0]))
        return torch.softmax(logits.double(), dim=1).cpu().numpy()


def with_each_word_deleted(
    scorer: Scorer, text: str
) -> tuple[list[tuple[int, int]], np.ndarray] | None:
    """The word spans of `text` and the probabilities of `text` (row 0) and of `text`
    without each word (rows 1..): the queries both text threats rank words by. None past
    the query budget."""
    spans = word_spans(text)
    probs = scorer.probabilities([text] + [replace_span(text, s, "") for s in spans])
    return None if probs is None else (spans, probs)


class TextThreat(Threat):
    """Base of threats that edit strings. Subclasses write `attack_text`, which returns the
    edited string and the budget it used when it flipped the decision (None otherwise)."""

    norm: ClassVar[Norm] = "none"
    needs_gradients: ClassVar[bool] = False
    family: ClassVar[Family] = "text"
    access: ClassVar[Access] = "scores"
    working_copies: ClassVar[int] = 2

    def run(
        self, target: Target, x: Tensor, y: Tensor, budget: float, generator: torch.Generator
    ) -> Tensor:
        return self.run_measured(target, x, y, budget, generator)[0]

    def run_measured(
        self, target: Target, x: Tensor, y: Tensor, budget: float, generator: torch.Generator
    ) -> tuple[Tensor, Tensor | None]:
        if target.input_spec.modality != "text":
            raise ThreatError(
                f"{type(self).__name__} edits strings, but the model reads tensors of shape "
                f'{target.input_spec.shape}; use it on a text model (modality = "text")'
            )
        width = target.input_spec.shape[0]
        texts = decode_texts(x)
        rng = rng_from(generator)
        edited, used = [], []
        for text, label in zip(texts, y.tolist(), strict=True):
            new, cost = self.attack_text(target, text, int(label), budget, rng)
            if not fits(new, width):
                new, cost = text, None  # a subclass bug must not break the batch
            edited.append(new)
            used.append(np.nan if cost is None else float(cost))
        return encode_tensor(edited, width).to(x.device), torch.tensor(used)

    @abstractmethod
    def attack_text(
        self, target: Target, text: str, label: int, budget: float, rng: np.random.Generator
    ) -> tuple[str, float | None]:
        """The adversarial version of `text` (correctly classified as `label`) within
        `budget`, and the budget used if it flipped the decision, else None."""
