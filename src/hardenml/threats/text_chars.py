"""Character edits under an edit budget: typos, homoglyphs, invisible Unicode, case and
whitespace noise, placed greedily on the most important words.

After DeepWordBug: Gao et al. 2018, "Black-box Generation of Adversarial Text Sequences to
Evade Deep Learning Classifiers", https://arxiv.org/abs/1801.04354. Words are ranked by how
much deleting each lowers the score of the true class (one query per word); then, most
important first, each word gets `tries` random edits, one edit each, and keeps the one that
lowers that score most (if any does). It stops when the decision flips, when `budget`
edits are spent, or when `max_queries` is.

`budget`: the number of character edits per input (one edit: swap two adjacent letters,
drop one, insert one, replace one by a keyboard neighbour or a look-alike from another
script, insert an invisible character, flip one letter's case, or split the word with a
space). At most one edit per word. Access: scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from hardenml.targets import Target
from hardenml.targets.text_codec import fits
from hardenml.threats._text import Scorer, TextThreat, replace_span, with_each_word_deleted
from hardenml.threats.parameters import ThreatParameterError

OPERATIONS = ("swap", "drop", "insert", "keyboard", "homoglyph", "invisible", "case", "space")
_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
KEYBOARD = {
    key: "".join(
        _ROWS[r][c]
        for r in range(len(_ROWS))
        for c in range(len(_ROWS[r]))
        if abs(r - row) + abs(c - col) == 1 or (r == row - 1 and c == col + 1)
    )
    for row, keys in enumerate(_ROWS)
    for col, key in enumerate(keys)
}
# Latin letters and the Cyrillic or Greek letters that render the same in most fonts.
HOMOGLYPHS = {
    "a": "\u0430",
    "c": "\u0441",
    "e": "\u0435",
    "i": "\u0456",
    "j": "\u0458",
    "o": "\u043e",
    "p": "\u0440",
    "s": "\u0455",
    "x": "\u0445",
    "y": "\u0443",
    "A": "\u0391",
    "B": "\u0392",
    "E": "\u0395",
    "H": "\u0397",
    "K": "\u039a",
    "M": "\u039c",
    "O": "\u039f",
    "T": "\u03a4",
}
# Zero width space, zero width non-joiner, zero width joiner, word joiner, soft hyphen.
INVISIBLE = ("\u200b", "\u200c", "\u200d", "\u2060", "\u00ad")


def edit_word(word: str, operation: str, rng: np.random.Generator) -> str | None:
    """`word` with one edit of kind `operation`, or None where it cannot apply."""
    n = len(word)
    if operation == "swap" and n >= 2:
        i = int(rng.integers(0, n - 1))
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if operation == "drop" and n >= 2:
        i = int(rng.integers(0, n))
        return word[:i] + word[i + 1 :]
    if operation == "insert":
        i = int(rng.integers(0, n + 1))
        return word[:i] + chr(ord("a") + int(rng.integers(0, 26))) + word[i:]
    if operation == "keyboard":
        spots = [i for i, ch in enumerate(word) if ch.lower() in KEYBOARD]
        if spots:
            i = spots[int(rng.integers(0, len(spots)))]
            near = KEYBOARD[word[i].lower()]
            new = near[int(rng.integers(0, len(near)))]
            return word[:i] + (new.upper() if word[i].isupper() else new) + word[i + 1 :]
    if operation == "homoglyph":
        spots = [i for i, ch in enumerate(word) if ch in HOMOGLYPHS]
        if spots:
            i = spots[int(rng.integers(0, len(spots)))]
            return word[:i] + HOMOGLYPHS[word[i]] + word[i + 1 :]
    if operation == "invisible" and n >= 2:
        i = int(rng.integers(1, n))
        return word[:i] + INVISIBLE[int(rng.integers(0, len(INVISIBLE)))] + word[i:]
    if operation == "case":
        i = int(rng.integers(0, n))
        return word[:i] + word[i].swapcase() + word[i + 1 :]
    if operation == "space" and n >= 2:
        i = int(rng.integers(1, n))
        return word[:i] + " " + word[i:]
    return None


class CharacterEdits(TextThreat):
    """Typos, look-alikes and invisible characters on the most important words."""

    title: ClassVar[str] = "character edits (after DeepWordBug, Gao et al. 2018)"

    def __init__(
        self,
        *,
        operations: Sequence[str] = OPERATIONS,
        tries: int = 4,
        max_queries: int = 500,
    ) -> None:
        unknown = sorted(set(operations) - set(OPERATIONS))
        if unknown or not operations:
            raise ThreatParameterError(
                "operations", list(operations), f"a non-empty list of {list(OPERATIONS)}"
            )
        if tries < 1:
            raise ThreatParameterError("tries", tries, "at least 1 edit tried per word")
        if max_queries < 1:
            raise ThreatParameterError("max_queries", max_queries, "at least 1 query per input")
        self.operations = tuple(operations)
        self.tries = tries
        self.max_queries = max_queries

    def describe(self, budget: float) -> str:
        return (
            f"an attacker who sees the model's scores and makes at most {budget:g} character "
            f"edits in each input ({', '.join(self.operations)}; one edit per word, the most "
            f"important words first), with at most {self.max_queries} queries per input, "
            f"using {self.title}"
        )

    def attack_text(
        self, target: Target, text: str, label: int, budget: float, rng: np.random.Generator
    ) -> tuple[str, float | None]:
        scorer = Scorer(target, label, self.max_queries)
        width = target.input_spec.shape[0]
        ranked = with_each_word_deleted(scorer, text)
        if ranked is None:
            return text, None
        spans, deleted = ranked
        # How much deleting each word lowers the true class's probability.
        current_p = float(deleted[0, label])
        scores = current_p - deleted[1:, label]
        current, edits = text, 0
        for j in np.argsort(-scores, kind="stable"):
            if edits >= int(budget):
                break
            start, end = spans[j]
            word = current[start:end]
            options = [
                edit_word(word, self.operations[int(rng.integers(0, len(self.operations)))], rng)
                for _ in range(self.tries)
            ]
            candidates = [
                replace_span(current, (start, end), new)
                for new in dict.fromkeys(o for o in options if o is not None and o != word)
            ]
            candidates = [c for c in candidates if fits(c, width)]
            probs = scorer.probabilities(candidates)
            if probs is None:
                break
            if not len(candidates):
                continue
            best = int(np.argmin(probs[:, label]))
            if probs[best, label] >= current_p:
                continue
            new_word = candidates[best][start : end + len(candidates[best]) - len(current)]
            shift = len(new_word) - (end - start)
            current, current_p, edits = candidates[best], float(probs[best, label]), edits + 1
            spans = [(s + shift, e + shift) if s >= end else (s, e) for s, e in spans]
            spans[j] = (start, end + shift)
            if int(np.argmax(probs[best])) != label:
                return current, float(edits)
        return current, None
