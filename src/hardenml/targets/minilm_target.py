"""MiniLM sentence embeddings and a linear head as a `Target`.

The encoder is all-MiniLM-L6-v2 from its wheel (`hardenml.targets.minilm`), frozen; the
model file holds only the head, as safetensors (`weight` of shape `(k, 384)`, `bias` of
shape `(k,)`), so loading it runs no code.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hardenml.config import ModelConfig
from hardenml.targets.base import Target, TargetError
from hardenml.targets.kinds import TargetKind
from hardenml.targets.minilm import DIMENSIONS, embed
from hardenml.targets.text_target import TextTarget, text_spec_from_config


class MiniLMTarget(TextTarget):
    """logits = embed(text) @ weight.T + bias, embeddings of unit length."""

    def __init__(
        self, weight: Tensor, bias: Tensor, *, max_chars: int, classes: Sequence[str]
    ) -> None:
        if tuple(weight.shape) != (len(classes), DIMENSIONS) or tuple(bias.shape) != (
            len(classes),
        ):
            raise TargetError(
                f"the MiniLM head has weight {list(weight.shape)} and bias {list(bias.shape)}; "
                f"expected [{len(classes)}, {DIMENSIONS}] and [{len(classes)}] for the "
                f"{len(classes)} classes in model.classes"
            )
        self.weight = weight.to(torch.float64)
        self.bias = bias.to(torch.float64)
        super().__init__(max_chars=max_chars, classes=classes)

    def _scores(self, texts: list[str]) -> Tensor:
        features = torch.from_numpy(embed(texts)).to(torch.float64)
        return features @ self.weight.T + self.bias


def linear_head(coef: np.ndarray, intercept: np.ndarray) -> tuple[Tensor, Tensor]:
    """A fitted scikit-learn linear classifier's (coef_, intercept_) as (weight, bias) with
    one row per class; a binary model's single row z becomes [0, z] (softmax: sigmoid)."""
    weight = np.atleast_2d(np.asarray(coef, dtype=np.float64))
    bias = np.atleast_1d(np.asarray(intercept, dtype=np.float64))
    if weight.shape[0] == 1:
        weight = np.vstack([np.zeros_like(weight), weight])
        bias = np.concatenate([[0.0], bias])
    return torch.from_numpy(weight), torch.from_numpy(bias)


class MiniLMKind(TargetKind):
    """`model.kind = "text-minilm"`: a linear head over MiniLM embeddings, as safetensors."""

    suffixes = (".safetensors",)
    description = "a linear head over all-MiniLM-L6-v2 sentence embeddings (safetensors)"
    artifact_suffix = ".safetensors"

    def save(self, target: Target, path: Path) -> None:
        from safetensors.torch import save_file

        if not isinstance(target, MiniLMTarget):
            raise TargetError(f"a text-minilm file holds a head, not a {type(target).__name__}")
        save_file({"weight": target.weight.contiguous(), "bias": target.bias.contiguous()}, path)

    def load(self, model: ModelConfig, path: Path | None, options: Any, *, trust: bool) -> Target:
        assert path is not None  # needs_file
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        spec = text_spec_from_config(model)
        try:
            tensors = load_file(path)
        except (SafetensorError, OSError) as exc:
            raise TargetError(f"{path} is not a readable safetensors file: {exc}") from None
        missing = sorted({"weight", "bias"} - set(tensors))
        if missing:
            raise TargetError(f"{path.name} lacks the tensors {missing} of a MiniLM head")
        return MiniLMTarget(
            tensors["weight"], tensors["bias"], max_chars=spec.shape[0], classes=model.classes
        )
