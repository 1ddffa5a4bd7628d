"""A scikit-learn text pipeline (e.g. TF-IDF + logistic regression) as a `Target`.

The pipeline takes raw strings (its first step is a vectorizer) and is saved with skops,
which loads without running code. It is a black box to attacks: its inputs are discrete.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hardenml.config import ModelConfig
from hardenml.targets.base import Target, TargetError
from hardenml.targets.kinds import TargetKind
from hardenml.targets.loading import load_sklearn
from hardenml.targets.sklearn_target import estimator_logits
from hardenml.targets.text_target import TextTarget, text_spec_from_config


class SklearnTextTarget(TextTarget):
    """An estimator whose `predict_proba` (or `decision_function`) takes a list of strings."""

    def __init__(self, estimator: Any, *, max_chars: int, classes: Sequence[str]) -> None:
        if not hasattr(estimator, "predict_proba") and not hasattr(estimator, "decision_function"):
            raise TargetError(
                f"{type(estimator).__name__} has neither predict_proba nor decision_function; "
                "hardenml needs per-class scores"
            )
        self.estimator = estimator
        super().__init__(max_chars=max_chars, classes=classes)

    def _scores(self, texts: list[str]) -> Tensor:
        return torch.from_numpy(estimator_logits(self.estimator, texts))


class SklearnTextKind(TargetKind):
    """`model.kind = "text-sklearn"`: a pipeline on raw strings saved with skops."""

    suffixes = (".skops",)
    description = "a scikit-learn pipeline on raw strings (TF-IDF + a classifier) saved with skops"
    artifact_suffix = ".skops"

    def save(self, target: Target, path: Path) -> None:
        import skops.io as sio

        if not isinstance(target, SklearnTextTarget):
            raise TargetError(
                f"a text-sklearn model file holds a pipeline, not a {type(target).__name__}"
            )
        sio.dump(target.estimator, path)

    def load(self, model: ModelConfig, path: Path | None, options: Any, *, trust: bool) -> Target:
        assert path is not None  # needs_file
        spec = text_spec_from_config(model)
        estimator = load_sklearn(
            path, trust=trust or model.trust, trusted_types=model.trusted_types
        )
        return SklearnTextTarget(estimator, max_chars=spec.shape[0], classes=model.classes)
