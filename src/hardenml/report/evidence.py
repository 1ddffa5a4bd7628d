"""Adversarial examples a finding recorded, read back and checked against their sha256."""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hardenml.config import HardenConfig
from hardenml.ledger import FindingState

EVIDENCE_ARRAYS = ("x", "x_adv", "y", "pred")


@dataclass(frozen=True)
class Evidence:
    """Originals `x`, adversarial inputs `x_adv` (both (n, *input_shape)), true labels `y`
    and the model's predictions on `x_adv`, `pred`."""

    finding_id: str
    path: str
    x: np.ndarray
    x_adv: np.ndarray
    y: np.ndarray
    pred: np.ndarray


@dataclass(frozen=True)
class EvidenceProblem:
    """An evidence entry that could not be shown, and why."""

    finding_id: str
    path: str
    reason: str


def load_evidence(config: HardenConfig, finding: FindingState) -> list[Evidence | EvidenceProblem]:
    """Every adversarial-examples entry of a finding: the arrays, or why they are missing.

    Files are read with `allow_pickle=False` and must still hash to the sha256 the ledger
    recorded; a changed file is reported, never shown.
    """
    out: list[Evidence | EvidenceProblem] = []
    for entry in finding.evidence:
        if entry.get("kind") != "adversarial_examples" or "path" not in entry:
            continue
        out.append(_load_one(config, finding.finding_id, entry))
    return out


def _load_one(
    config: HardenConfig, finding_id: str, entry: dict[str, Any]
) -> Evidence | EvidenceProblem:
    shown = str(entry["path"])
    path = config.resolve(Path(shown))
    try:
        blob = path.read_bytes()
    except OSError as exc:
        return EvidenceProblem(finding_id, shown, f"cannot read the file ({exc.strerror})")
    expected = entry.get("sha256")
    actual = hashlib.sha256(blob).hexdigest()
    if expected and actual != expected:
        return EvidenceProblem(
            finding_id,
            shown,
            f"the file changed since the ledger recorded it (sha256 {actual[:12]}, "
            f"recorded {str(expected)[:12]})",
        )
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            missing = [k for k in EVIDENCE_ARRAYS if k not in npz.files]
            if missing:
                return EvidenceProblem(finding_id, shown, f"arrays missing: {missing}")
            arrays = {k: np.asarray(npz[k]) for k in EVIDENCE_ARRAYS}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        return EvidenceProblem(finding_id, shown, f"not a readable .npz ({exc})")
    n = len(arrays["y"])
    if any(len(a) != n for a in arrays.values()) or arrays["x"].shape != arrays["x_adv"].shape:
        return EvidenceProblem(finding_id, shown, "arrays of mismatched shapes")
    return Evidence(finding_id, shown, **arrays)


def is_image_shape(shape: tuple[int, ...]) -> bool:
    """(C, H, W) with 1 or 3 channels, or (H, W): inputs worth drawing as pictures."""
    if len(shape) == 3:
        return shape[0] in (1, 3) and min(shape[1:]) >= 4
    return len(shape) == 2 and min(shape) >= 4
