"""Requests the service accepts, parsed into arrays, and every way one can be refused.

`POST /v1/predict` takes `{"inputs": x}` with `x` one input of the declared shape
(`model.input.shape`, nested lists) or a list of them, the shape deciding which; the HTTP
target (`model.kind = "http"`) sends the batched form. `POST /v1/ingest` takes
`{"records": [...]}`, each with the `input`, the per-class `scores` the other service's
model gave, and optionally `client_id`, `model_version`, `request_id` and `latency_ms`.
A refused request gets a 4xx whose JSON body names the problem (`RequestProblem`).
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from hardenml.targets import InputSpec

# Values a little outside the declared bounds are float noise from the client's scaling.
BOUNDS_TOLERANCE = 1e-6


class RequestProblem(Exception):
    """A request the service refuses: `status` (4xx) and a message naming the problem."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _refuse_constant(name: str) -> float:
    raise RequestProblem(422, f"the body holds {name}; inputs must be finite numbers")


def parse_json(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; NaN and Infinity tokens are refused while parsing.

    orjson parses (about eight times faster than the standard library on a batch of
    images, which is most of what the service adds to a request); a body it refuses is
    parsed again by the standard library, whose message says where and what is wrong."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        value = _explain_refusal(body)
    if not isinstance(value, dict):
        raise RequestProblem(422, f"the body must be a JSON object, got {type(value).__name__}")
    return value


def _explain_refusal(body: bytes) -> Any:
    try:
        return json.loads(body, parse_constant=_refuse_constant)
    except RequestProblem:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestProblem(400, f"malformed JSON: {exc}") from None
    except RecursionError:
        raise RequestProblem(400, "malformed JSON: nested too deeply") from None


def _array(value: Any, what: str) -> np.ndarray:
    """Nested lists of numbers as float64; booleans, strings and ragged lists refused."""
    try:
        raw = np.asarray(value)
    except ValueError:
        raise RequestProblem(
            422, f"{what} is ragged: every input must have the same shape"
        ) from None
    if raw.dtype.kind not in "iuf":
        kind = "ragged lists" if raw.dtype.kind == "O" else f"values of type {raw.dtype.name}"
        raise RequestProblem(422, f"{what} holds {kind}; expected numbers (float or int)")
    return raw.astype(np.float64, copy=False)


def check_rows(rows: np.ndarray, spec: InputSpec, what: str) -> None:
    """Refuse NaN, infinite and out-of-bounds values in `rows` (n, *spec.shape)."""
    finite = np.isfinite(rows)
    if not finite.all():
        bad = int((~finite.reshape(rows.shape[0], -1)).any(axis=1).sum())
        raise RequestProblem(422, f"{what}: {bad} input(s) hold NaN or infinite values")
    low, high = spec.bounds
    if rows.size and (rows.min() < low - BOUNDS_TOLERANCE or rows.max() > high + BOUNDS_TOLERANCE):
        raise RequestProblem(
            422,
            f"{what}: values from {rows.min():.6g} to {rows.max():.6g} lie outside the "
            f"model's input bounds [{low:g}, {high:g}] (model.input.bounds)",
        )


def predict_inputs(
    body: dict[str, Any], spec: InputSpec, *, max_rows: int
) -> tuple[np.ndarray, bool]:
    """(rows of shape `(n, *spec.shape)` as float32, whether the request was batched)."""
    if "inputs" not in body:
        raise RequestProblem(
            422, f"the body has no 'inputs' (found keys {sorted(body)}); send {{\"inputs\": x}}"
        )
    if body["inputs"] == []:
        raise RequestProblem(422, "'inputs' is an empty list; send at least one input")
    return _rows(_array(body["inputs"], "'inputs'"), spec, max_rows=max_rows)


_NPY_MAGIC = b"\x93NUMPY\x01\x00"
# The header `numpy.save` writes for a C-ordered little-endian number array (format 1.0).
_NPY_HEADER = re.compile(
    rb"\{'descr': '([<|][fiu][1248])', 'fortran_order': False, 'shape': \(([0-9, ]*)\), \} *\n"
)


def _plain_npy(body: bytes) -> np.ndarray | None:
    """The array of a body that is exactly what `numpy.save` writes for a C-ordered
    little-endian number array, read without `np.load` (whose header parser, Python's
    `ast.literal_eval`, is a tenth of a millisecond per request); None for anything else,
    which `np.load` then reads or refuses."""
    if len(body) < 10 or not body.startswith(_NPY_MAGIC):
        return None
    end = 10 + int.from_bytes(body[8:10], "little")
    match = _NPY_HEADER.fullmatch(body[10:end])
    if match is None:
        return None
    dtype = np.dtype(match.group(1).decode())
    shape = tuple(int(d) for d in match.group(2).split(b",") if d.strip())
    count = int(np.prod(shape, dtype=np.int64))
    if len(body) - end != count * dtype.itemsize:
        return None
    # A copy: the body's bytes are read-only, and torch wants a writable array.
    return np.frombuffer(body, dtype=dtype, count=count, offset=end).reshape(shape).copy()


def predict_npy(body: bytes, spec: InputSpec, *, max_rows: int) -> tuple[np.ndarray, bool]:
    """`predict_inputs` for a body that is one `.npy` array (`Content-Type:
    application/x-npy`, what `numpy.save` writes): no JSON to parse and no nested lists
    to walk, which for a batch of images is most of what JSON costs the service. Object
    arrays (pickles) are refused, as are the dtypes JSON cannot carry either."""
    try:
        raw = _plain_npy(body)
        if raw is None:
            raw = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise RequestProblem(
            400, f"the body is not one .npy array (numpy.save's format): {exc}"
        ) from None
    if not isinstance(raw, np.ndarray) or raw.dtype.kind not in "iuf":
        kind = getattr(raw, "dtype", type(raw).__name__)
        raise RequestProblem(422, f"the .npy array holds {kind}; expected numbers (float or int)")
    if raw.size == 0:
        raise RequestProblem(422, "the .npy array is empty; send at least one input")
    return _rows(raw, spec, max_rows=max_rows)


def _rows(rows: np.ndarray, spec: InputSpec, *, max_rows: int) -> tuple[np.ndarray, bool]:
    shape = spec.shape
    if rows.shape == shape:
        rows, batched = rows[None], False
    elif rows.ndim == len(shape) + 1 and rows.shape[1:] == shape:
        batched = True
    else:
        raise RequestProblem(
            422,
            f"'inputs' has shape {list(rows.shape)}; expected one input of shape {list(shape)} "
            f"or a list of them, shape [n, {', '.join(str(d) for d in shape)}]",
        )
    if rows.shape[0] > max_rows:
        raise RequestProblem(
            413, f"'inputs' holds {rows.shape[0]} rows, more than monitor.max_rows = {max_rows}"
        )
    check_rows(rows, spec, "'inputs'")
    return rows.astype(np.float32), batched


@dataclass(frozen=True)
class IngestedRecord:
    """One record another service posted, checked."""

    row: np.ndarray
    scores: np.ndarray
    client_id: str
    model_version: str
    request_id: str | None
    latency_ms: float | None


def ingest_records(
    body: dict[str, Any], spec: InputSpec, n_classes: int, *, max_rows: int
) -> list[IngestedRecord]:
    records = body.get("records")
    if not isinstance(records, list) or not records:
        raise RequestProblem(
            422, "the body needs 'records': a non-empty list of {input, scores, ...} objects"
        )
    if len(records) > max_rows:
        raise RequestProblem(
            413, f"'records' holds {len(records)} records, more than monitor.max_rows = {max_rows}"
        )
    out = []
    for i, record in enumerate(records):
        where = f"records[{i}]"
        if not isinstance(record, dict) or "input" not in record or "scores" not in record:
            raise RequestProblem(422, f"{where} must be an object with 'input' and 'scores'")
        row = _array(record["input"], f"{where}.input")
        if row.shape != spec.shape:
            raise RequestProblem(
                422, f"{where}.input has shape {list(row.shape)}; expected {list(spec.shape)}"
            )
        check_rows(row[None], spec, f"{where}.input")
        scores = _array(record["scores"], f"{where}.scores")
        if scores.shape != (n_classes,) or not np.isfinite(scores).all():
            raise RequestProblem(
                422, f"{where}.scores must be {n_classes} finite probabilities, one per class"
            )
        if scores.min() < -1e-6 or abs(float(scores.sum()) - 1.0) > 1e-3:
            raise RequestProblem(
                422, f"{where}.scores must be probabilities (non-negative, summing to 1)"
            )
        latency = record.get("latency_ms")
        if latency is not None and (
            not isinstance(latency, int | float) or not math.isfinite(latency) or latency < 0
        ):
            raise RequestProblem(422, f"{where}.latency_ms must be a non-negative number")
        out.append(
            IngestedRecord(
                row=row.astype(np.float32),
                scores=scores,
                client_id=_text(record.get("client_id", "ingest"), f"{where}.client_id"),
                model_version=_text(
                    record.get("model_version", "external"), f"{where}.model_version"
                ),
                request_id=None
                if record.get("request_id") is None
                else _text(record["request_id"], f"{where}.request_id"),
                latency_ms=None if latency is None else float(latency),
            )
        )
    return out


def _text(value: Any, where: str, limit: int = 200) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise RequestProblem(422, f"{where} must be a non-empty string of at most {limit} chars")
    return value
