"""The base of models that read strings: `logits` on code-point rows, `classify` on strings.

A text target's `input_spec` has `modality = "text"`, shape `(max_chars,)`: the loop's
tensors are rows of code points (`hardenml.targets.text_codec`), decoded here, at the edge,
so the model itself only ever sees strings. It has no input gradients: its inputs are
discrete.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor

from hardenml.config import ModelConfig
from hardenml.targets.base import InputSpec, Target, TargetError
from hardenml.targets.text_codec import MAX_CODE_POINT, TextCodecError, decode_texts, encode_tensor


def text_spec(max_chars: int) -> InputSpec:
    """The input spec of a model that reads strings of at most `max_chars` characters."""
    return InputSpec(
        shape=(max_chars,), dtype=torch.int32, bounds=(0.0, float(MAX_CODE_POINT)), modality="text"
    )


def text_spec_from_config(model: ModelConfig) -> InputSpec:
    """`text_spec` of `[model.input]`, which must declare `modality = "text"`."""
    if model.input.modality != "text":
        raise TargetError(
            f'model.kind {model.kind!r} reads strings: set [model.input] modality = "text" '
            "and shape = [max_chars] (the longest input it takes, e.g. [1000])"
        )
    return text_spec(model.input.shape[0])


class TextTarget(Target):
    """A classifier of strings. Subclasses implement `_scores(texts) -> (n, k)` logits."""

    def __init__(self, *, max_chars: int, classes: Sequence[str]) -> None:
        super().__init__(
            input_spec=text_spec(max_chars),
            classes=classes,
            has_gradients=False,
            device=torch.device("cpu"),
        )

    @property
    def no_gradients_reason(self) -> str:
        return (
            f"{type(self).__name__} reads strings (discrete inputs), so it has no input gradients"
        )

    @abstractmethod
    def _scores(self, texts: list[str]) -> Tensor: ...

    def _forward(self, x: Tensor) -> Tensor:
        return self._scores(decode_texts(x)).to(torch.float64)

    def encode(self, texts: Sequence[str]) -> Tensor:
        """`texts` as this model's input rows; `TargetError` naming a row it cannot take."""
        try:
            return encode_tensor(texts, self.input_spec.shape[0])
        except TextCodecError as exc:
            raise TargetError(str(exc)) from None

    @torch.no_grad()
    def classify(self, texts: Sequence[str]) -> Tensor:
        """Logits `(n, k)` for strings, through the checked entry (counts the queries)."""
        return self.logits(self.encode(texts))
