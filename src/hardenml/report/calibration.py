"""Reliability data for the reports: the scan's `ReliabilityBin`s, read back from a run.

Guo et al. 2017, "On Calibration of Modern Neural Networks",
https://arxiv.org/abs/1706.04599. The bins are computed by
`hardenml.scan.calibration.reliability_diagram`; reports only draw what a caller or a run
measured. A run without reliability data is reported as not measured, never estimated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hardenml.scan.calibration import ReliabilityBin, reliability_diagram

__all__ = [
    "Reliability",
    "ReliabilityBin",
    "bins_calibration_error",
    "reliability_diagram",
    "reliability_from_payload",
]

Reliability = Mapping[str, Sequence[ReliabilityBin]]
# Run payload keys that may hold reliability bins: label -> bins (or -> {"bins": [...]}),
# or one calibration summary ({"bins": [...], "ece": ...}) for the evaluation data.
PAYLOAD_KEYS = ("reliability", "calibration")
UNLABELLED = "evaluation data"


def bins_calibration_error(bins: Sequence[ReliabilityBin]) -> float:
    """Expected calibration error from the bins: sum_b (|B_b| / n) |acc_b - conf_b|
    (Guo et al. 2017, Eq. 3); NaN when the bins hold no sample."""
    total = sum(b.count for b in bins)
    if total == 0:
        return float("nan")
    return sum(b.count * abs(b.accuracy - b.confidence) for b in bins) / total


def _parse(bins: Any) -> list[ReliabilityBin]:
    if isinstance(bins, Mapping):
        bins = bins.get("bins", [])
    if not isinstance(bins, Sequence):
        return []
    return [
        ReliabilityBin(
            lo=float(b["lo"]),
            hi=float(b["hi"]),
            confidence=float(b["confidence"]),
            accuracy=float(b["accuracy"]),
            count=int(b["count"]),
        )
        for b in bins
        if isinstance(b, Mapping)
    ]


def reliability_from_payload(payload: Mapping[str, Any] | None) -> dict[str, list[ReliabilityBin]]:
    """The reliability bins a run recorded, by label; empty when it recorded none."""
    out: dict[str, list[ReliabilityBin]] = {}
    for key in PAYLOAD_KEYS:
        raw = (payload or {}).get(key)
        if not isinstance(raw, Mapping):
            continue
        labelled = {UNLABELLED: raw} if "bins" in raw else raw
        for label, bins in labelled.items():
            parsed = _parse(bins)
            if parsed and sum(b.count for b in parsed):
                out.setdefault(str(label), parsed)
    return out
