"""TextFooler: greedy word substitution by embedding neighbours, under a semantic constraint.

Jin et al. 2020, "Is BERT Really Robust? A Strong Baseline for Natural Language Attack on
Text Classification and Entailment", AAAI, https://arxiv.org/abs/1907.11932. As there:

1. Word importance by deletion: I(w) = p_y(x) - p_y(x without w), plus, where deleting w
   changes the decision to y', p_y'(x without w) - p_y'(x). Stop words are never changed.
2. Most important word first: the `candidates` nearest words by cosine in a word-embedding
   space, at least `min_word_similarity` apart from it, each put in its place (one query
   each). If some candidates flip the decision, the one whose sentence embedding is most
   similar to the original's wins (if it passes the constraint) and the attack ends; else
   the candidate that lowers p_y most and passes the constraint is kept, and the search
   moves on to the next word.
3. Constraint: the cosine similarity of the sentence embeddings of the original and the
   candidate is at least `min_sentence_similarity`.

Where this differs from the paper, and why: the word space is all-MiniLM-L6-v2's own input
(WordPiece) embeddings of whole words, not counter-fitted GloVe vectors, so that nothing
is downloaded; its neighbours include antonyms more often ("good": "bad"), which the
sentence constraint only partly removes; and it sits at lower cosines, so the default
`min_word_similarity` is 0.35 where the paper's is 0.5. The sentence encoder is
all-MiniLM-L6-v2 on the whole input instead of the Universal Sentence Encoder on a
15-word window. There is no
part-of-speech filter (no tagger ships offline here). The similarity is computed only for
the few candidates that would be kept (best first), not for all of them: the same choice,
fewer encoder calls.

`budget`: the most words changed per input (k). `max_queries`: model queries per input,
the importance ranking included. Access: scores.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from hardenml.targets import Target
from hardenml.targets.minilm import embed, word_rows, word_vectors
from hardenml.targets.text_codec import fits
from hardenml.threats._text import (
    Scorer,
    TextThreat,
    replace_span,
    stop_words,
    with_each_word_deleted,
)
from hardenml.threats.parameters import ThreatParameterError

# Candidates whose sentence similarity is checked per word when none flips the decision.
CHECKED_PER_WORD = 3


def matched_case(new: str, like: str) -> str:
    """`new` written in the case pattern of `like` ("Good" -> "Great")."""
    if like.isupper() and len(like) > 1:
        return new.upper()
    if like[:1].isupper():
        return new[:1].upper() + new[1:]
    return new


class TextFoolerJin2020(TextThreat):
    """Greedy word substitution by importance, after TextFooler (Jin et al. 2020)."""

    title: ClassVar[str] = "TextFooler (Jin et al. 2020)"

    def __init__(
        self,
        *,
        candidates: int = 50,
        # The paper's 0.5 is a cosine between counter-fitted vectors; MiniLM's input
        # embeddings sit lower (a near-synonym such as "dull"/"bland" is at 0.37), and at
        # 0.5 most words keep one neighbour or none (bench/README.md, "text.py").
        min_word_similarity: float = 0.35,
        min_sentence_similarity: float = 0.8,
        max_queries: int = 2000,
    ) -> None:
        if candidates < 1:
            raise ThreatParameterError("candidates", candidates, "at least 1 neighbour per word")
        for name, value in (
            ("min_word_similarity", min_word_similarity),
            ("min_sentence_similarity", min_sentence_similarity),
        ):
            if not -1.0 <= value <= 1.0:
                raise ThreatParameterError(name, value, "a cosine similarity in [-1, 1]")
        if max_queries < 1:
            raise ThreatParameterError("max_queries", max_queries, "at least 1 query per input")
        self.candidates = candidates
        self.min_word_similarity = min_word_similarity
        self.min_sentence_similarity = min_sentence_similarity
        self.max_queries = max_queries
        self.neighbours_: dict[str, list[str]] = {}

    def describe(self, budget: float) -> str:
        return (
            f"an attacker who sees the model's scores and replaces at most {budget:g} words "
            f"of each input (never a stop word) by one of their {self.candidates} nearest "
            f"words, keeping the sentence embedding's cosine similarity to the original at "
            f"least {self.min_sentence_similarity:g} (all-MiniLM-L6-v2), with at most "
            f"{self.max_queries} queries per input, using {self.title}"
        )

    def neighbours(self, word: str) -> list[str]:
        """The nearest whole words of `word` in MiniLM's input embeddings, nearest first."""
        key = word.lower()
        if key not in self.neighbours_:
            words, vectors = word_vectors()
            found: list[str] = []
            rows = word_rows()
            if key in rows:
                similarity = vectors @ vectors[rows[key]]
                order = np.argsort(-similarity, kind="stable")[: self.candidates + 1]
                found = [
                    words[i]
                    for i in order
                    if words[i] != key and similarity[i] >= self.min_word_similarity
                ][: self.candidates]
            self.neighbours_[key] = found
        return self.neighbours_[key]

    def attack_text(
        self, target: Target, text: str, label: int, budget: float, rng: np.random.Generator
    ) -> tuple[str, float | None]:
        scorer = Scorer(target, label, self.max_queries)
        width = target.input_spec.shape[0]
        ranked = with_each_word_deleted(scorer, text)
        if ranked is None:
            return text, None
        spans, probs = ranked
        order = np.argsort(-_importance(probs, label), kind="stable")
        stops = stop_words()
        original = embed([text])[0]
        current, current_p, changed = text, float(probs[0, label]), 0
        for j in order:
            if changed >= int(budget):
                break
            start, end = spans[j]
            word = current[start:end]
            if word.lower() in stops:
                continue
            swaps = [matched_case(new, word) for new in self.neighbours(word)]
            candidates = [replace_span(current, (start, end), new) for new in swaps]
            keep = [i for i, c in enumerate(candidates) if fits(c, width)]
            swaps, candidates = [swaps[i] for i in keep], [candidates[i] for i in keep]
            if not candidates:
                continue
            scores = scorer.probabilities(candidates)
            if scores is None:
                break
            flipped = [i for i in range(len(candidates)) if int(np.argmax(scores[i])) != label]
            if flipped:
                similarity = embed([candidates[i] for i in flipped]) @ original
                best = int(np.argmax(similarity))
                if similarity[best] >= self.min_sentence_similarity:
                    return candidates[flipped[best]], float(changed + 1)
            lower = [
                i
                for i in np.argsort(scores[:, label], kind="stable")
                if scores[i, label] < current_p
            ][:CHECKED_PER_WORD]
            if not lower:
                continue
            similarity = embed([candidates[i] for i in lower]) @ original
            passing = [
                i
                for i, s in zip(lower, similarity, strict=True)
                if s >= self.min_sentence_similarity
            ]
            if not passing:
                continue
            pick = passing[0]
            shift = len(swaps[pick]) - (end - start)
            current, current_p, changed = candidates[pick], float(scores[pick, label]), changed + 1
            spans = [(s + shift, e + shift) if s >= end else (s, e) for s, e in spans]
            spans[j] = (start, end + shift)
        return current, None


def _importance(probs: np.ndarray, label: int) -> np.ndarray:
    """TextFooler's deletion importance from the probabilities of the text (row 0) and of
    the text without each word (rows 1..)."""
    drop = probs[0, label] - probs[1:, label]
    decided = probs[1:].argmax(axis=1)
    moved = decided != label
    rows = np.arange(len(decided))
    gain = probs[1:][rows, decided] - probs[0, decided]
    return np.where(moved, drop + gain, drop)
