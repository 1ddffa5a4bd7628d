"""An ONNX model, scored through onnxruntime, as a black-box `Target`.

ONNX (https://onnx.ai) is how models leave their framework: torch exports
(`torch.onnx.export`) return logits, scikit-learn exports (skl2onnx) return a label and
the class probabilities, either as a tensor or, with skl2onnx's default ZipMap, as one
`{class: probability}` dict per row. Both forms are read; probabilities become
log-probabilities, which softmax maps back to the same probabilities.

onnxruntime gives no input gradients, so only threats that need scores or labels run on
this target; a gradient threat is refused with the list of those that apply. An exact
differentiable conversion (onnx2torch and the like) would have to be checked against
onnxruntime op by op, so it is not attempted here.

Install with `pip install 'hardenml[onnx]'`; onnxruntime is imported only when a config
names `model.kind = "onnx"`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from hardenml.config import ModelConfig
from hardenml.targets.base import InputSpec, Target, TargetError
from hardenml.targets.kinds import TargetKind
from hardenml.targets.loading import input_spec_from_config

# Element types hardenml can feed: the batch is cast to the model's declared one.
_INPUT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
}
ScoreForm = Literal["auto", "logits", "probabilities"]


class OnnxOptions(BaseModel):
    """`[model.options]` of `model.kind = "onnx"`.

    batch_size: rows per onnxruntime call (default 512); a model exported with a fixed
        batch dimension gets exactly that many per call instead.
    output: the output to read (default: the only float output, or the one whose name
        says probabilities, as skl2onnx names it).
    scores: what that output holds: "logits", "probabilities", or "auto" (default):
        probabilities for a ZipMap output or a name containing "prob", logits otherwise.
    providers: onnxruntime execution providers in order of preference.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_size: int = Field(default=512, gt=0)
    output: str | None = Field(default=None, min_length=1)
    scores: ScoreForm = "auto"
    providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"], min_length=1)


def _is_zipmap(type_name: str) -> bool:
    return type_name.startswith("seq(map(")


def _is_float_output(type_name: str) -> bool:
    return type_name in ("tensor(float)", "tensor(double)", "tensor(float16)") or (
        _is_zipmap(type_name) and "tensor(float" in type_name
    )


def pick_output(outputs: Sequence[Any], requested: str | None, source: str) -> Any:
    """The session output that holds per-class scores (an onnxruntime `NodeArg`)."""
    listed = ", ".join(f"{o.name!r} ({o.type})" for o in outputs)
    if requested is not None:
        named = [o for o in outputs if o.name == requested]
        if not named:
            raise TargetError(
                f"{source} has no output {requested!r} (model.options.output); "
                f"its outputs are {listed}"
            )
        if not _is_float_output(named[0].type):
            raise TargetError(
                f"output {requested!r} of {source} holds {named[0].type}, not per-class "
                f"scores; set model.options.output to one of its float outputs: {listed}"
            )
        return named[0]
    # skl2onnx classifiers add an int64 label output beside the scores; skip non-float ones.
    scores = [o for o in outputs if _is_float_output(o.type)]
    if len(scores) > 1:
        scores = [o for o in scores if "prob" in o.name.lower()] or scores
    if len(scores) != 1:
        raise TargetError(
            f"cannot tell which output of {source} holds the class scores: its outputs are "
            f"{listed}; set model.options.output to the name of the one to read"
        )
    return scores[0]


def check_input_shape(
    declared: Sequence[Any] | None, spec: InputSpec, name: str, source: str
) -> int | None:
    """Check the ONNX input's per-sample shape against `model.input.shape`; return its
    fixed batch size, or None when the batch dimension is dynamic (named or absent)."""
    if not declared:
        return None  # the export recorded no shape: the run-time check is all there is
    batch, *sample = declared
    fixed = [d if isinstance(d, int) else None for d in sample]
    mismatch = len(fixed) != len(spec.shape) or any(
        d is not None and d != want for d, want in zip(fixed, spec.shape, strict=False)
    )
    if mismatch:
        shown = ["?" if d is None else d for d in fixed]
        fix = (
            f"set model.input.shape = {shown}"
            if None not in fixed
            else f"set model.input.shape to match {shown}"
        )
        raise TargetError(
            f"{source}: input {name!r} takes samples of shape {shown} (batch dimension "
            f"left out), but model.input.shape is {list(spec.shape)}; {fix}"
        )
    return batch if isinstance(batch, int) and batch > 0 else None


class OnnxTarget(Target):
    """An onnxruntime `InferenceSession` with one float input, scored in batches.

    `source` names the model in errors (its file name). Normalisation from `input_spec`
    is applied before the batch is sent, as `TorchTarget` applies it inside the module.
    """

    def __init__(
        self,
        session: Any,
        *,
        input_spec: InputSpec,
        classes: Sequence[str],
        batch_size: int = 512,
        output: str | None = None,
        scores: ScoreForm = "auto",
        source: str = "the ONNX model",
    ) -> None:
        super().__init__(
            input_spec=input_spec,
            classes=classes,
            has_gradients=False,
            device=torch.device("cpu"),
        )
        self.session = session
        self.source = source
        inputs = session.get_inputs()
        if len(inputs) != 1:
            names = [i.name for i in inputs]
            raise TargetError(
                f"{source} takes {len(inputs)} inputs {names}; hardenml feeds one tensor of "
                "shape (batch, *model.input.shape): export the model with a single input"
            )
        self.input_name = inputs[0].name
        if inputs[0].type not in _INPUT_TYPES:
            raise TargetError(
                f"{source}: input {self.input_name!r} takes {inputs[0].type}; hardenml feeds "
                f"floating-point tensors ({', '.join(_INPUT_TYPES)}): export it with a float input"
            )
        self.input_dtype = _INPUT_TYPES[inputs[0].type]
        self.fixed_batch = check_input_shape(inputs[0].shape, input_spec, self.input_name, source)
        self.batch_size = self.fixed_batch or batch_size
        chosen = pick_output(session.get_outputs(), output, source)
        self.output_name: str = chosen.name
        self.zipmap = _is_zipmap(chosen.type)
        if scores == "auto":
            scores = "probabilities" if self.zipmap or "prob" in chosen.name.lower() else "logits"
        self.probabilities = scores == "probabilities"
        shape = None if self.zipmap else chosen.shape
        if shape and (len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != len(classes))):
            raise TargetError(
                f"{source}: output {chosen.name!r} has shape {shape}, but model.classes names "
                f"{len(classes)} classes; expected (batch, {len(classes)}), one score per class"
            )

    @property
    def no_gradients_reason(self) -> str:
        return f"{self.source} is scored through onnxruntime, which gives no input gradients"

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Scores of one batch of at most `self.batch_size` rows, shape (rows, classes)."""
        rows = batch.shape[0]
        if self.fixed_batch and rows < self.fixed_batch:
            # A fixed batch dimension takes exactly that many rows: pad with the last one.
            pad = np.repeat(batch[-1:], self.fixed_batch - rows, axis=0)
            batch = np.concatenate([batch, pad])
        try:
            (out,) = self.session.run([self.output_name], {self.input_name: batch})
        except Exception as exc:  # onnxruntime's errors derive from Exception only
            raise TargetError(
                f"onnxruntime could not score a batch of shape {batch.shape} with {self.source}: "
                f"{exc}"
            ) from None
        if self.zipmap:
            # One {class: probability} dict per row, in the model's class order.
            keys = list(out[0])
            out = [[row[key] for key in keys] for row in out]
        scores = np.asarray(out, dtype=np.float64)
        return scores[:rows] if self.fixed_batch else scores

    def _forward(self, x: Tensor) -> Tensor:
        norm = self.input_spec.normalizer()
        if norm is not None:
            x = (x - norm[0]) / norm[1]
        data = x.detach().cpu().numpy().astype(self.input_dtype, copy=False)
        parts = [
            self._run(data[i : i + self.batch_size]) for i in range(0, len(data), self.batch_size)
        ]
        scores = np.concatenate(parts) if parts else np.empty((0, len(self.classes)))
        if self.probabilities:
            scores = np.log(np.clip(scores, 1e-12, 1.0))
        return torch.as_tensor(scores, dtype=self.input_spec.dtype)


class OnnxKind(TargetKind):
    """`model.kind = "onnx"`: an `.onnx` file scored through onnxruntime (a black box)."""

    suffixes = (".onnx",)
    options = OnnxOptions
    description = "an ONNX model scored through onnxruntime (black box: no gradients)"

    def load(self, model: ModelConfig, path: Path | None, options: Any, *, trust: bool) -> Target:
        assert path is not None  # needs_file
        try:
            import onnxruntime as ort
        except ImportError:
            raise TargetError(
                "model.kind 'onnx' needs onnxruntime: pip install 'hardenml[onnx]'"
            ) from None
        available = ort.get_available_providers()
        missing = [p for p in options.providers if p not in available]
        if missing:
            raise TargetError(
                f"model.options.providers names {missing}, which this onnxruntime does not "
                f"have; available: {available}"
            )
        settings = ort.SessionOptions()
        # As many threads as torch uses, so that one setting (OMP_NUM_THREADS,
        # torch.set_num_threads) governs both and parallel workers do not oversubscribe.
        settings.intra_op_num_threads = torch.get_num_threads()
        try:
            session = ort.InferenceSession(
                str(path), sess_options=settings, providers=list(options.providers)
            )
        except Exception as exc:  # onnxruntime's errors derive from Exception only
            raise TargetError(f"{path} is not a readable ONNX model: {exc}") from None
        return OnnxTarget(
            session,
            input_spec=input_spec_from_config(model),
            classes=model.classes,
            batch_size=options.batch_size,
            output=options.output,
            scores=options.scores,
            source=path.name,
        )
