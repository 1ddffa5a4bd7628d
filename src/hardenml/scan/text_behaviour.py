"""The text side of the behavioural suites (CheckList, Ribeiro et al. 2020,
https://arxiv.org/abs/2005.04118): the changed inputs; `hardenml.scan.behaviour` queries
the model and judges them as it does for images and tables.

- invariance: `typos` (`severity` words of each input get one typo each: a swap, drop,
  insert or keyboard slip), `name-swap` and `location-swap` (every person name or place
  from CheckList-style lists becomes another from the same list). Inputs with nothing to
  swap are not tested.
- directional, `edit = "negation"`: " not" after the first auxiliary verb ("is" -> "is
  not"); inputs without one, or already negated there, are not tested.
- minimum: every sentence the templates make, `{slot}`s filled from `fill` (all
  combinations), labelled with the suite's class.
"""

from __future__ import annotations

import itertools
import re
import string

import numpy as np
import torch
from torch import Tensor

from hardenml.config import BehaviourSuite
from hardenml.targets.text_codec import decode_texts, encode_tensor, fits
from hardenml.threats._text import replace_span, rng_from, word_spans
from hardenml.threats.text_chars import edit_word

TYPOS = ("swap", "drop", "insert", "keyboard")
NAMES = (
    "John", "Mary", "James", "Linda", "Robert", "Patricia", "Michael", "Jennifer", "David",
    "Susan", "Maria", "Ahmed", "Wei", "Priya", "Carlos", "Fatima", "Yuki", "Olga", "Kwame",
    "Ana", "Peter", "Emma", "Paul", "Anna", "Mark", "Sarah", "Tom", "Laura", "Jack", "Kate",
)  # fmt: skip
LOCATIONS = (
    "London", "Paris", "Tokyo", "Berlin", "Chicago", "Mumbai", "Lagos", "Sydney", "Toronto",
    "Madrid", "Rome", "Cairo", "Seoul", "Boston", "Texas", "France", "India", "China",
    "Mexico", "Brazil", "Canada", "Japan", "Germany", "Italy", "Spain", "Russia", "Egypt",
    "Kenya", "Ireland", "Scotland",
)  # fmt: skip
AUXILIARY = re.compile(
    r"\b(is|was|are|were|does|did|do|has|have|had|can|will|would|should|could)\b(?! not\b)",
    re.IGNORECASE,
)


def text_transform(
    suite: BehaviourSuite, x: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """An invariance suite's changed inputs and the mask of inputs it changed."""
    width = x.shape[1]
    rng = rng_from(generator)
    texts = decode_texts(x)
    if suite.transform == "typos":
        changed = [_typos(text, suite.severity, rng) for text in texts]
    else:
        pool = NAMES if suite.transform == "name-swap" else LOCATIONS
        changed = [_swap(text, pool, rng) for text in texts]
    changed = [new if fits(new, width) else old for new, old in zip(changed, texts, strict=True)]
    tested = torch.tensor([new != old for new, old in zip(changed, texts, strict=True)])
    return encode_tensor(changed, width), tested


def negated(x: Tensor) -> tuple[Tensor, Tensor]:
    """Inputs with " not" after their first auxiliary verb, and which ones had one."""
    width = x.shape[1]
    texts = decode_texts(x)
    changed = []
    for text in texts:
        match = AUXILIARY.search(text)
        new = text if match is None else text[: match.end()] + " not" + text[match.end() :]
        changed.append(new if fits(new, width) else text)
    tested = torch.tensor([new != old for new, old in zip(changed, texts, strict=True)])
    return encode_tensor(changed, width), tested


def template_inputs(suite: BehaviourSuite, width: int, label: int) -> tuple[Tensor, Tensor]:
    """Every sentence of a minimum suite's templates, encoded, and its labels."""
    fill = suite.fill or {}
    sentences: list[str] = []
    for template in suite.templates or []:
        slots = [name for _, name, _, _ in string.Formatter().parse(template) if name]
        missing = sorted(set(slots) - set(fill))
        if missing:
            raise ValueError(f"the template {template!r} has slots {missing} that fill lacks")
        values = [fill[slot] for slot in dict.fromkeys(slots)]
        for combo in itertools.product(*values):
            sentences.append(template.format(**dict(zip(dict.fromkeys(slots), combo, strict=True))))
    too_long = [s for s in sentences if not fits(s, width)]
    if too_long:
        raise ValueError(f"the sentence {too_long[0]!r} is longer than the model's {width}")
    return encode_tensor(sentences, width), torch.full((len(sentences),), label, dtype=torch.long)


def _typos(text: str, count: int, rng: np.random.Generator) -> str:
    spans = [span for span in word_spans(text) if span[1] - span[0] >= 3]
    if not spans:
        return text
    chosen = sorted(rng.choice(len(spans), size=min(count, len(spans)), replace=False))
    # Right to left, so that earlier spans keep their offsets.
    for i in reversed(chosen):
        start, end = spans[int(i)]
        new = edit_word(text[start:end], TYPOS[int(rng.integers(0, len(TYPOS)))], rng)
        if new is not None:
            text = replace_span(text, (start, end), new)
    return text


def _swap(text: str, pool: tuple[str, ...], rng: np.random.Generator) -> str:
    known = set(pool)
    for start, end in reversed(word_spans(text)):
        word = text[start:end]
        if word in known:
            others = [p for p in pool if p != word]
            text = replace_span(text, (start, end), others[int(rng.integers(0, len(others)))])
    return text
