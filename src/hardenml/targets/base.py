"""The `Target` contract: what every attack, scan and patch sees of a model."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from hardenml.targets.preprocessing import preprocess


class TargetError(Exception):
    """The model cannot be used as declared; the message says why and what to do."""


@dataclass(frozen=True)
class InputSpec:
    """What the model accepts, in the raw input space where budgets are measured.

    `shape` excludes the batch dimension. `mean`/`std` are the model's own
    normalisation, applied inside the target so that attacks never see it.
    `preprocessing`: the declared non-differentiable steps (`model.preprocessing`, e.g.
    "bit-depth:4"), applied before the normalisation, forward exactly and backward as the
    identity (`hardenml.targets.preprocessing`).
    `modality`: "text" for a model that reads strings; its inputs are rows of Unicode code
    points, `shape = (max_chars,)`, and `bounds` is the code-point range, not a budget
    (`hardenml.targets.text_codec`). Only text threats apply to it.
    """

    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    bounds: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    preprocessing: tuple[str, ...] = ()
    modality: Literal["tensor", "text"] = "tensor"

    def normalizer(self) -> tuple[Tensor, Tensor] | None:
        """Broadcastable (mean, std) over a batch, or None when there is none."""
        if self.mean is None or self.std is None:
            return None
        # One value per channel (images: dim 1) or per feature (flat inputs).
        view = (1, len(self.mean)) + (1,) * (len(self.shape) - 1)
        if len(self.mean) not in (1, self.shape[0]):
            raise TargetError(
                f"mean/std have {len(self.mean)} values but the input's first dimension is "
                f"{self.shape[0]}: give one value, or one per channel/feature"
            )
        mean = torch.tensor(self.mean, dtype=self.dtype).reshape(view)
        std = torch.tensor(self.std, dtype=self.dtype).reshape(view)
        return mean, std


class Target(ABC):
    """A model under test. Subclasses implement `_forward`; `logits` is the checked entry,
    which applies the declared preprocessing (`input_spec.preprocessing`) first.

    Outputs are logits (or log-probabilities, which softmax maps back to the same
    probabilities), shape `(n, len(classes))`. `queries` counts the inputs sent.
    """

    input_spec: InputSpec
    classes: tuple[str, ...]
    has_gradients: bool
    device: torch.device
    # Whether the decision on one input can change from call to call (a randomised model
    # under its declared rule, `hardenml.targets.stochastic`). Attacks then do not stop at
    # the first iterate it gets wrong: that iterate lies on the boundary, where a fresh
    # decision is right about half the time.
    stochastic: bool = False

    def __init__(
        self,
        *,
        input_spec: InputSpec,
        classes: Sequence[str],
        has_gradients: bool,
        device: torch.device,
    ) -> None:
        self.input_spec = input_spec
        self.classes = tuple(classes)
        self.has_gradients = has_gradients
        self.device = device
        self.queries = 0
        # Bytes an attack may hold at once (None: the default of `threats.batching`), and
        # the measured autograd footprint of one input row, cached by `threats.batching`.
        self.memory_budget: int | None = None
        self.activation_bytes_per_row: int | None = None

    @abstractmethod
    def _forward(self, x: Tensor) -> Tensor: ...

    def logits(self, x: Tensor) -> Tensor:
        """Model outputs for a batch `x` of shape `(n, *input_spec.shape)`."""
        if tuple(x.shape[1:]) != self.input_spec.shape:
            raise TargetError(
                f"input of shape {tuple(x.shape[1:])} per sample, but the model declares "
                f"input shape {self.input_spec.shape}: fix model.input.shape or the data"
            )
        spec = self.input_spec
        out = self._forward(
            preprocess(x, spec.preprocessing, spec.bounds) if spec.preprocessing else x
        )
        n = x.shape[0]
        if out.ndim != 2 or out.shape[0] != n or out.shape[1] != len(self.classes):
            raise TargetError(
                f"the model returned outputs of shape {tuple(out.shape)} for {n} inputs; "
                f"expected ({n}, {len(self.classes)}), one score per declared class "
                f"({len(self.classes)} in model.classes)"
            )
        if not bool(torch.isfinite(out).all()):
            bad = int((~torch.isfinite(out)).any(dim=1).sum())
            raise TargetError(
                f"the model returned NaN or infinite outputs for {bad} of {n} inputs; "
                "check its weights and the input normalisation (model.input.mean/std)"
            )
        self.queries += n
        return out

    @torch.no_grad()
    def predict(self, x: Tensor, batch_size: int = 512) -> Tensor:
        """Predicted class indices, computed in batches without gradients."""
        parts = [
            self.logits(x[i : i + batch_size].to(self.device)).argmax(dim=1).cpu()
            for i in range(0, x.shape[0], batch_size)
        ]
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)

    @property
    def no_gradients_reason(self) -> str:
        """Why this target has no input gradients, in words, for the refusal of a gradient
        threat (the threats room adds which threats do apply)."""
        return f"{type(self).__name__} exposes no input gradients"

    def require_gradients(self) -> None:
        """Raise a clear error if a gradient attack cannot run on this target."""
        if not self.has_gradients:
            raise TargetError(
                f"{self.no_gradients_reason}, so a white-box gradient attack cannot run on "
                "it; use a black-box or corruption threat instead"
            )

    def check(self, x: Tensor, *, need_gradients: bool = False) -> None:
        """Preflight: one small forward (and backward) pass with clear errors."""
        sample = x[: min(8, x.shape[0])].to(self.device)
        if need_gradients:
            self.require_gradients()
            sample = sample.clone().requires_grad_(True)
            out = self.logits(sample)
            if not out.requires_grad:
                raise TargetError(
                    "the model's output does not depend differentiably on its input (is "
                    "the forward pass under torch.no_grad() or detached?); a gradient "
                    "attack cannot run on it: remove the detach, or scan it as a black box "
                    '(attack = "square" or another score- or decision-based threat)'
                )
        else:
            with torch.no_grad():
                self.logits(sample)
