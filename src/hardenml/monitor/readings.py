"""What every detector reads and returns: a `Window` of live traffic in, `DetectorReading`s out.

A detector is built once against reference data (the data the model was released on) and
then evaluated on window after window; the alert rules (`hardenml.monitor.alerts`) read its
readings by detector name and feature.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np


class MonitorError(Exception):
    """The monitor was given data or settings it cannot use; the message says which and why."""


@dataclass(frozen=True)
class DetectorReading:
    """One detector's verdict on one window, for one feature (None: the detector overall).

    `statistic` is the test statistic (a KS distance, an MMD^2, a share); `p_value` is None
    where the detector has no test; `flagged` is the detector's own decision at its alpha;
    `n` the window rows it used; `interval`, where the detector measures one, the interval
    of `statistic` at the detector's confidence.
    """

    detector: str
    feature: str | None
    statistic: float
    p_value: float | None
    flagged: bool
    n: int
    detail: str
    interval: tuple[float, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["interval"] = None if self.interval is None else list(self.interval)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectorReading:
        interval = data.get("interval")
        return cls(
            detector=str(data["detector"]),
            feature=None if data.get("feature") is None else str(data["feature"]),
            statistic=float(data["statistic"]),
            p_value=None if data.get("p_value") is None else float(data["p_value"]),
            flagged=bool(data["flagged"]),
            n=int(data["n"]),
            detail=str(data.get("detail", "")),
            interval=None if interval is None else (float(interval[0]), float(interval[1])),
        )


@dataclass(frozen=True)
class Window:
    """The recent traffic a detector looks at; each detector reads the parts it needs.

    `inputs`: `(n, *input shape)` (flattened to `(n, d)` for the detectors); `probabilities`:
    `(n, k)` model outputs; `clients`: one client id per row.
    """

    inputs: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    clients: Sequence[str] | None = None

    def flat_inputs(self, detector: str) -> np.ndarray:
        if self.inputs is None:
            raise MonitorError(f"the {detector} detector needs the window's inputs")
        return as_rows(self.inputs, f"the window's inputs ({detector})")

    def probability_rows(self, detector: str) -> np.ndarray:
        if self.probabilities is None:
            raise MonitorError(f"the {detector} detector needs the window's probabilities")
        return as_probabilities(self.probabilities, f"the window's probabilities ({detector})")

    def client_ids(self, detector: str) -> list[str]:
        if self.clients is None:
            raise MonitorError(f"the {detector} detector needs the window's client ids")
        return [str(c) for c in self.clients]


class Detector(Protocol):
    """Built against reference data; `evaluate` judges one window against it."""

    name: str

    def evaluate(self, window: Window) -> list[DetectorReading]: ...


def as_rows(values: np.ndarray, what: str) -> np.ndarray:
    """`values` as finite float64 rows `(n, d)`, or a `MonitorError` naming `what`."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 0:
        raise MonitorError(f"{what} must be a batch of rows, got a scalar")
    rows = array.reshape(array.shape[0], -1) if array.ndim != 2 else array
    if not np.isfinite(rows).all():
        raise MonitorError(f"{what} hold NaN or infinite values")
    return rows


def as_probabilities(values: np.ndarray, what: str) -> np.ndarray:
    rows = np.asarray(values, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] < 2:
        raise MonitorError(f"{what} must have shape (n, classes) with 2+ classes")
    if not np.isfinite(rows).all():
        raise MonitorError(f"{what} hold NaN or infinite values")
    if rows.size and (rows.min() < -1e-6 or np.abs(rows.sum(axis=1) - 1).max() > 1e-3):
        raise MonitorError(f"{what} are not probabilities (rows must be >= 0 and sum to 1)")
    return rows


def check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise MonitorError(f"alpha must lie in (0, 1), got {alpha}")


def seeded_subsample(rows: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """At most `limit` of `rows`, drawn without replacement by `seed`, in their order."""
    if rows.shape[0] <= limit:
        return rows
    keep = np.random.default_rng(seed).choice(rows.shape[0], limit, replace=False)
    return rows[np.sort(keep)]


def require_rows(rows: np.ndarray, minimum: int, what: str) -> None:
    if rows.shape[0] < minimum:
        raise MonitorError(f"{what} has {rows.shape[0]} rows; it needs at least {minimum}")
