"""What a scan derives from its per-sample outcomes beyond accuracy: calibration (clean
and under each threat), robustness margins, slice gaps, corruption failure rates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hardenml.config import HardenConfig
from hardenml.data import Dataset
from hardenml.datachecks import duplicate_leakage, feature_shift, label_balance
from hardenml.records import Measurement
from hardenml.scan.calibration import calibration_summary
from hardenml.scan.corruption_metrics import corruption_failure_rates
from hardenml.scan.slices import slice_gaps, slice_masks


@dataclass
class Analysis:
    measurements: list[Measurement] = field(default_factory=list)
    calibration: dict[str, dict[str, Any]] = field(default_factory=dict)
    margins: dict[str, dict[str, Any]] = field(default_factory=dict)
    slices: list[dict[str, Any]] = field(default_factory=list)
    corruptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    data_checks: dict[str, Any] = field(default_factory=dict)
    integrity: list[dict[str, Any]] = field(default_factory=list)
    # Integrity checks that do not apply to some threats, and why (text threats: no gradients).
    integrity_not_applicable: list[dict[str, Any]] = field(default_factory=list)
    # One dict per behavioural suite (`hardenml.scan.behaviour.SuiteResult.as_dict`).
    behaviour: list[dict[str, Any]] = field(default_factory=list)

    def payload(self) -> dict[str, Any]:
        return {
            "calibration": self.calibration,
            "margins": self.margins,
            "slices": self.slices,
            "corruptions": self.corruptions,
            "data_checks": self.data_checks,
            "integrity": self.integrity,
            "integrity_not_applicable": self.integrity_not_applicable,
            "behaviour": self.behaviour,
        }


def _interval(
    metric: str,
    threat: str | None,
    budget: float | None,
    value: float,
    ci: tuple[float, float],
    n: int,
    confidence: float,
    seed: int,
) -> Measurement:
    return Measurement(
        metric, threat, budget, float(value), float(ci[0]), float(ci[1]), confidence, n, seed
    )


def bootstrap_quantile(
    values: np.ndarray, q: float, *, confidence: float, seed: int, n_boot: int = 200
) -> tuple[float, tuple[float, float]]:
    """A quantile with a seeded percentile-bootstrap interval (NaN values are dropped)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, finite.size, size=(n_boot, finite.size))
    boot = np.quantile(finite[draws], q, axis=1)
    tail = (1 - confidence) / 2
    return float(np.quantile(finite, q)), (
        float(np.quantile(boot, tail)),
        float(np.quantile(boot, 1 - tail)),
    )


def data_checks(
    reference: Dataset, evaluation: Dataset, *, confidence: float, seed: int
) -> dict[str, Any]:
    """Train/test leakage, per-feature shift and label balance of the evaluation data."""
    ref_x = reference.x.reshape(len(reference), -1)
    ev_x = evaluation.x.reshape(len(evaluation), -1)
    names = evaluation.provenance.get("feature_names")
    leakage = duplicate_leakage(ref_x, ev_x, confidence=confidence, seed=seed)
    shift = feature_shift(ref_x, ev_x, feature_names=names)
    n_classes = int(max(reference.y.max(), evaluation.y.max())) + 1
    balance = label_balance(
        evaluation.y, reference=reference.y, n_classes=n_classes, confidence=confidence
    )
    return {
        "leakage": leakage.as_dict(),
        "shift": shift.as_dict(),
        "label_balance": balance.as_dict(),
    }


def analyse(
    config: HardenConfig,
    data: Dataset,
    outcomes: dict[str, np.ndarray],
    units: list[tuple[str, float]],
    *,
    corruption_threats: set[str],
    seed: int,
    reference: Dataset | None = None,
) -> Analysis:
    conf = config.policy.confidence
    out = Analysis()
    if reference is not None and config.data.split != "test":
        # The evaluated rows include the training rows: comparing them with the train
        # split would report the overlap as leakage (400 "exact duplicates" of 500).
        out.data_checks = {
            "skipped": (
                f"data.split = {config.data.split!r} evaluates training rows, so train/test "
                "leakage and shift checks have no held-out split to compare"
            )
        }
    elif reference is not None:
        out.data_checks = data_checks(reference, data, confidence=conf, seed=seed)
    y = outcomes["y"]
    n = len(y)
    if n == 0:
        return out
    clean_correct = outcomes["clean_probs"].argmax(1) == y

    labelled = {"clean": outcomes["clean_probs"]}
    labelled.update(
        {f"{name}@{budget:g}": outcomes[f"adv_probs/{name}@{budget:g}"] for name, budget in units}
    )
    for label, probs in labelled.items():
        summary = calibration_summary(probs, y, confidence=conf, seed=seed)
        out.calibration[label] = summary.as_dict()
        threat, budget = (None, None) if label == "clean" else _split(label)
        out.measurements.append(
            _interval("ece", threat, budget, summary.ece, summary.ece_ci, n, conf, seed)
        )
        out.measurements.append(
            _interval("brier", threat, budget, summary.brier, summary.brier_ci, n, conf, seed)
        )

    for name, budget in units:
        margins = outcomes.get(f"margin/{name}@{budget:g}")
        if margins is None or not np.isfinite(margins).any():
            continue
        # Samples never flipped within the searched budget have a margin above it.
        censored = np.where(np.isnan(margins) & clean_correct, np.inf, margins)
        correct_margins = censored[clean_correct]
        median, median_ci = bootstrap_quantile(correct_margins, 0.5, confidence=conf, seed=seed)
        p10, p10_ci = bootstrap_quantile(correct_margins, 0.1, confidence=conf, seed=seed)
        out.margins[name] = {
            "max_budget": budget,
            "n": int(clean_correct.sum()),
            "flipped": int(np.isfinite(correct_margins).sum()),
            "median": median,
            "median_ci": list(median_ci),
            "p10": p10,
            "p10_ci": list(p10_ci),
            "histogram": np.histogram(
                correct_margins[np.isfinite(correct_margins)], bins=10, range=(0, budget)
            )[0].tolist(),
        }
        out.measurements.append(
            _interval(
                "margin_median",
                name,
                budget,
                median,
                median_ci,
                int(clean_correct.sum()),
                conf,
                seed,
            )
        )
        out.measurements.append(
            _interval("margin_p10", name, budget, p10, p10_ci, int(clean_correct.sum()), conf, seed)
        )

    if config.slices:
        x = data.x[outcomes["index"]]
        names = data.provenance.get("feature_names")
        correct_by = {"clean": clean_correct}
        for req in config.policy.robust:
            key = f"robust/{req.threat}@{req.budget:g}"
            if key in outcomes:
                correct_by[f"{req.threat}@{req.budget:g}"] = outcomes[key]
        for spec in config.slices:
            masks = slice_masks(spec, x, y, names, classes=list(config.model.classes))
            for label, correct in correct_by.items():
                for gap in slice_gaps(
                    correct,
                    masks,
                    tolerance=config.policy.slice_tolerance,
                    confidence=conf,
                    seed=seed,
                ):
                    out.slices.append({"outcome": label, **gap.as_dict()})

    for name in sorted(corruption_threats):
        severities = {int(b): outcomes[f"robust/{t}@{b:g}"] for t, b in units if t == name}
        if severities:
            rates = corruption_failure_rates(
                clean_correct, severities, corruption=name, confidence=conf, seed=seed
            )
            out.corruptions[name] = rates.as_dict()
    return out


def _split(label: str) -> tuple[str, float]:
    name, _, budget = label.rpartition("@")
    return name, float(budget)
