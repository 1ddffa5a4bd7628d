"""Adversarial examples (and their attributions) a finding recorded, read back and checked
against their sha256."""

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
from hardenml.scan.explain import ATTRIBUTION_ARRAYS

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
        arrays = _read_npz(config, finding.finding_id, entry, EVIDENCE_ARRAYS)
        if isinstance(arrays, EvidenceProblem):
            out.append(arrays)
            continue
        if arrays["x"].shape != arrays["x_adv"].shape:
            out.append(
                EvidenceProblem(
                    finding.finding_id, str(entry["path"]), "arrays of mismatched shapes"
                )
            )
            continue
        out.append(Evidence(finding.finding_id, str(entry["path"]), **arrays))
    return out


@dataclass(frozen=True)
class Attributions:
    """The Integrated Gradients of a finding's first examples (`hardenml.scan.explain`):
    `before`, `after` and `flip` (n, *input_shape), the completeness gaps, and the entry's
    own record (method, steps, largest relative gap, ranked features)."""

    finding_id: str
    path: str
    record: dict[str, Any]
    arrays: dict[str, np.ndarray]


@dataclass(frozen=True)
class FeatureAblation:
    """The features that carried a gradient-free model's flips, by single-feature ablation
    (`hardenml.scan.explain.feature_ablation`): the evidence entry's record as written."""

    finding_id: str
    record: dict[str, Any]


@dataclass(frozen=True)
class AttributionsMissing:
    """Why a finding has no attributions to show (the model gives no gradients)."""

    finding_id: str
    reason: str


def load_attributions(
    config: HardenConfig, finding: FindingState
) -> Attributions | FeatureAblation | AttributionsMissing | EvidenceProblem | None:
    """The finding's attributions (or, for a model without gradients, its feature
    ablation), why it has none, or None when the scan made none (explanations off)."""
    for entry in finding.evidence:
        if entry.get("kind") == "feature_ablation":
            return FeatureAblation(finding.finding_id, dict(entry))
        if entry.get("kind") == "attributions_unavailable":
            return AttributionsMissing(finding.finding_id, str(entry.get("reason")))
        if entry.get("kind") == "attributions" and "path" in entry:
            arrays = _read_npz(config, finding.finding_id, entry, ATTRIBUTION_ARRAYS)
            if isinstance(arrays, EvidenceProblem):
                return arrays
            return Attributions(finding.finding_id, str(entry["path"]), dict(entry), arrays)
    return None


def _read_npz(
    config: HardenConfig, finding_id: str, entry: dict[str, Any], names: tuple[str, ...]
) -> dict[str, np.ndarray] | EvidenceProblem:
    """The named arrays of an evidence .npz, all of one length, or why not."""
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
            missing = [k for k in names if k not in npz.files]
            if missing:
                return EvidenceProblem(finding_id, shown, f"arrays missing: {missing}")
            arrays = {k: np.asarray(npz[k]) for k in names}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        return EvidenceProblem(finding_id, shown, f"not a readable .npz ({exc})")
    if len({len(a) for a in arrays.values()}) > 1:
        return EvidenceProblem(finding_id, shown, "arrays of mismatched shapes")
    return arrays


def is_image_shape(shape: tuple[int, ...]) -> bool:
    """(C, H, W) with 1 or 3 channels, or (H, W): inputs worth drawing as pictures."""
    if len(shape) == 3:
        return shape[0] in (1, 3) and min(shape[1:]) >= 4
    return len(shape) == 2 and min(shape) >= 4
