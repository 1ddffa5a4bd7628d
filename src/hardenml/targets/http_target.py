"""A model behind a JSON API as a `Target`: `model.kind = "http"`.

Every forward pass is one or more `POST model.options.url` requests whose body is
`{"inputs": [x_1, ..., x_b]}` (`request_field`; each `x_i` a nested list of the declared
input shape, after `model.input.mean`/`std` when given), or `{"inputs": x}` with
`batched = false`. The response holds, under `scores_field`, one row of per-class scores
per input (`scores_type`: probabilities, the default, or logits), or, with
`response = "labels"`, under `labels_field` one label per input (a class index or a name
from `model.classes`). Dotted field names (`"result.scores"`) reach into nested objects.

A labels-only API is a decision-based black box: the target returns the one-hot
log-probabilities of the label (0 for it, log(1e-12) for the others), so the argmax is the
label and softmax confidence is 1. Score-based attacks (square, tabular-blackbox) then see
labels only: their search accepts a step only when it flips the label, so they find less
than they would with scores; HopSkipJump (label-only by design) is the attack that fits.

The token (`token_env`), timeouts, retries with backoff and the rate limit are those of
every network kind (`http_client.EndpointClient`); this module adds a per-scan query
budget (inputs sent), beyond which it stops with an error that names `query_budget`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import Tensor

from hardenml.config import ModelConfig
from hardenml.targets.base import InputSpec, Target, TargetError
from hardenml.targets.http_client import (
    EndpointClient,
    checked_headers,
    checked_url,
    excerpt,
    token_from_env,
)
from hardenml.targets.http_transport import Transport
from hardenml.targets.kinds import TargetKind
from hardenml.targets.loading import input_spec_from_config

# The log-probability of the classes a label-only answer rules out (as the sklearn target
# clips probabilities): finite, so the outputs stay valid logits.
LOG_ZERO = math.log(1e-12)
# The options that say which model answers and how its answers are read: they make up the
# target's identity. Timeouts, retries, the rate limit, the budget and the batching only
# change how it is asked, so raising the query budget still resumes a stopped scan.
IDENTITY_OPTIONS = (
    "url",
    "headers",
    "request_field",
    "response",
    "scores_field",
    "scores_type",
    "labels_field",
)


class HttpOptions(BaseModel):
    """`[model.options]` of `model.kind = "http"` (docs/config.md lists them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    token_env: str | None = None
    timeout: float = Field(default=30.0, gt=0)
    retries: int = Field(default=3, ge=0)
    backoff: float = Field(default=0.5, ge=0)
    rate_limit: float | None = Field(default=None, gt=0)
    query_budget: int | None = Field(default=None, gt=0)
    batch_size: int = Field(default=64, gt=0)
    batched: bool = True
    request_field: str = Field(default="inputs", min_length=1)
    response: Literal["scores", "labels"] = "scores"
    scores_field: str = Field(default="scores", min_length=1)
    scores_type: Literal["probabilities", "logits"] = "probabilities"
    labels_field: str = Field(default="labels", min_length=1)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return checked_url(url)

    @field_validator("headers")
    @classmethod
    def _no_secret_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        return checked_headers(headers)

    @model_validator(mode="after")
    def _single_inputs(self) -> HttpOptions:
        if not self.batched and self.batch_size != 1 and "batch_size" in self.model_fields_set:
            raise ValueError("batched = false sends one input per request: leave batch_size out")
        return self

    @property
    def rows_per_request(self) -> int:
        return self.batch_size if self.batched else 1


class HttpTarget(Target):
    """A classifier behind `options.url`; no gradients, `queries` counts inputs answered,
    `requests_sent` every HTTP request (retries included)."""

    def __init__(
        self,
        options: HttpOptions,
        *,
        input_spec: InputSpec,
        classes: Sequence[str],
        token: str | None = None,
        transport: Transport | None = None,
    ) -> None:
        super().__init__(
            input_spec=input_spec,
            classes=classes,
            has_gradients=False,
            device=torch.device("cpu"),
        )
        self.options = options
        self.client = EndpointClient(
            options.url,
            options,
            token=token,
            transport=transport,
            hints={
                status: (
                    f"; check model.options.request_field ({options.request_field!r}), "
                    "batched and model.input.shape against what the API expects"
                )
                for status in (400, 422)
            },
        )
        self._normalizer = input_spec.normalizer()

    @property
    def requests_sent(self) -> int:
        return self.client.requests_sent

    def __repr__(self) -> str:
        return f"HttpTarget(url={self.options.url!r}, response={self.options.response!r})"

    @property
    def no_gradients_reason(self) -> str:
        return (
            f"model.kind 'http' ({self.options.url}) answers queries only and exposes no "
            "input gradients"
        )

    def _forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        budget = self.options.query_budget
        if budget is not None and self.queries + n > budget:
            raise TargetError(
                f"the query budget model.options.query_budget = {budget} is spent: "
                f"{self.queries} inputs were sent to {self.options.url} in this scan and the "
                f"next call needs {n} more. Raise model.options.query_budget; the batches "
                "already finished are checkpointed, so running the scan again resumes"
            )
        rows = x.detach().cpu().to(torch.float64)
        if self._normalizer is not None:
            mean, std = self._normalizer
            rows = (rows - mean.double()) / std.double()
        step = self.options.rows_per_request
        parts = [self._ask(rows[i : i + step]) for i in range(0, n, step)]
        out = np.concatenate(parts) if parts else np.zeros((0, len(self.classes)))
        return torch.as_tensor(out, dtype=self.input_spec.dtype)

    def _ask(self, rows: Tensor) -> np.ndarray:
        """One request for `rows`: per-class logits, shape `(len(rows), classes)`."""
        inputs: Any = rows.tolist() if self.options.batched else rows[0].tolist()
        answer = self.client.post_json(_nested(self.options.request_field, inputs))
        if self.options.response == "labels":
            return self._labels(answer, len(rows))
        return self._scores(answer, len(rows))

    def _scores(self, answer: Any, n: int) -> np.ndarray:
        field = self.options.scores_field
        value = self._field(answer, field)
        rows = value if self.options.batched else [value]
        k = len(self.classes)
        if not isinstance(rows, list) or len(rows) != n:
            got = f"{len(rows)} rows" if isinstance(rows, list) else type(value).__name__
            raise self._error(
                f"returned {got} under {field!r} for {n} inputs; expected one row of "
                f"{k} scores per input"
            )
        try:
            scores = np.asarray(rows, dtype=np.float64)
        except (TypeError, ValueError):
            scores = None
        if scores is None or scores.ndim != 2 or scores.shape[1] != k:
            raise self._error(
                f"returned scores under {field!r} that are not {n} rows of {k} numbers (one "
                f"per class in model.classes); first row: {excerpt(json.dumps(rows[0]))}"
            )
        bad = ~np.isfinite(scores).all(axis=1)
        if bad.any():
            raise self._error(f"returned NaN or infinite scores for {int(bad.sum())} of {n} inputs")
        if self.options.scores_type == "logits":
            return scores
        if scores.min() < -1e-6 or scores.max() > 1 + 1e-6:
            raise self._error(
                f"returned scores outside [0, 1] ({scores.min():.4g} to {scores.max():.4g}) "
                "but model.options.scores_type = 'probabilities'; set it to 'logits' if the "
                "API returns logits"
            )
        return np.log(np.clip(scores, 1e-12, 1.0))

    def _labels(self, answer: Any, n: int) -> np.ndarray:
        field = self.options.labels_field
        value = self._field(answer, field)
        labels = value if self.options.batched else [value]
        if not isinstance(labels, list) or len(labels) != n:
            got = f"{len(labels)} labels" if isinstance(labels, list) else type(value).__name__
            raise self._error(f"returned {got} under {field!r} for {n} inputs; expected {n}")
        out = np.full((n, len(self.classes)), LOG_ZERO)
        for row, label in enumerate(labels):
            out[row, self._class_index(label)] = 0.0
        return out

    def _class_index(self, label: Any) -> int:
        if isinstance(label, str) and label in self.classes:
            return self.classes.index(label)
        is_index = isinstance(label, int) and not isinstance(label, bool)
        if is_index and 0 <= label < len(self.classes):
            return int(label)
        raise self._error(
            f"returned the label {excerpt(json.dumps(label))}, which is neither a class index "
            f"0..{len(self.classes) - 1} nor a name in model.classes"
        )

    def _field(self, answer: Any, path: str) -> Any:
        value = answer
        for name in path.split("."):
            if not isinstance(value, dict) or name not in value:
                keys = sorted(value) if isinstance(value, dict) else type(value).__name__
                option = "labels_field" if self.options.response == "labels" else "scores_field"
                raise self._error(
                    f"answered without the field {path!r} (found {keys}); set "
                    f"model.options.{option} to the field that holds the "
                    f"{self.options.response}"
                )
            value = value[name]
        return value

    def _error(self, problem: str) -> TargetError:
        return self.client.error(problem)


def _nested(path: str, value: Any) -> dict[str, Any]:
    """`{"a": {"b": value}}` for the dotted path "a.b"."""
    *outer, last = path.split(".")
    body: dict[str, Any] = {last: value}
    for name in reversed(outer):
        body = {name: body}
    return body


class HttpKind(TargetKind):
    """`model.kind = "http"`: a classifier behind a JSON API (see `HttpOptions`)."""

    needs_file = False
    options = HttpOptions
    description = "a classifier behind a JSON API returning scores or labels (no gradients)"

    def identity(self, model: ModelConfig, path: Path | None, options: Any) -> str:
        """sha256 over the URL and the options that say how answers are read: never the
        token, nor the settings that only pace the queries (see IDENTITY_OPTIONS)."""
        fields = options.model_dump(mode="json", include=set(IDENTITY_OPTIONS))
        body = json.dumps({"kind": "http", **fields}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()

    def load(self, model: ModelConfig, path: Path | None, options: Any, *, trust: bool) -> Target:
        return HttpTarget(
            options,
            input_spec=input_spec_from_config(model),
            classes=model.classes,
            token=token_from_env(options.token_env),
        )
