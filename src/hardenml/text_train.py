"""Training of the two text classifiers, for tests, the text demo and the benchmark.

TF-IDF + logistic regression (word uni- and bigrams, sublinear term frequencies) on raw
strings; and a logistic-regression head over frozen all-MiniLM-L6-v2 sentence embeddings
(Reimers & Gurevych 2019). Both seeded and deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hardenml.targets.minilm import embed
from hardenml.targets.minilm_target import MiniLMTarget, linear_head
from hardenml.targets.text_codec import decode_texts
from hardenml.targets.tfidf_target import SklearnTextTarget


def texts_of(x: np.ndarray) -> list[str]:
    """The strings of a text dataset's code-point rows."""
    return decode_texts(x)


def train_tfidf(
    texts: Sequence[str],
    y: np.ndarray,
    classes: Sequence[str],
    *,
    max_chars: int,
    seed: int = 0,
    regularisation: float = 4.0,
) -> SklearnTextTarget:
    """A TF-IDF + logistic-regression pipeline on `texts` with labels `y`, as a target."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipeline = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        LogisticRegression(C=regularisation, max_iter=2000, random_state=seed),
    )
    pipeline.fit(list(texts), np.asarray(y))
    return SklearnTextTarget(pipeline, max_chars=max_chars, classes=classes)


def train_minilm_head(
    texts: Sequence[str],
    y: np.ndarray,
    classes: Sequence[str],
    *,
    max_chars: int,
    seed: int = 0,
    regularisation: float = 4.0,
) -> MiniLMTarget:
    """A logistic-regression head on frozen MiniLM embeddings of `texts`, as a target."""
    from sklearn.linear_model import LogisticRegression

    head = LogisticRegression(C=regularisation, max_iter=2000, random_state=seed)
    head.fit(embed(texts), np.asarray(y))
    weight, bias = linear_head(head.coef_, head.intercept_)
    return MiniLMTarget(weight, bias, max_chars=max_chars, classes=classes)
