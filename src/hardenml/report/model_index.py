"""The model card's Hugging Face metadata: `model-index` evaluation results of one run.

The Hub reads a card's YAML front matter (https://huggingface.co/docs/hub/model-cards,
"Evaluation Results"): `model-index[].results[]`, each a task, a dataset and metrics with
`type`, `name`, `value`, `config` and `args`. One result holds the run: clean accuracy,
robust accuracy per threat and budget (accuracy per severity for a corruption), and ECE
and Brier score, clean and under each threat; each metric's `args` give its interval, its
level and how it was computed (Wilson score or seeded percentile bootstrap), n and seed.
"""

from __future__ import annotations

import math
from typing import Any

from hardenml._version import __version__
from hardenml.config import HardenConfig
from hardenml.gate import GateDecision
from hardenml.records import Measurement, UnitKey
from hardenml.report.common import is_corruption, measurements, threat_attacks
from hardenml.report.evidence import is_image_shape
from hardenml.scan import interval_method

# Our metric -> the Hub's metric type (ids of the `evaluate` library where one exists).
METRIC_TYPES = {
    "clean_accuracy": "accuracy",
    "robust_accuracy": "accuracy",
    "ece": "expected_calibration_error",
    "brier": "brier_score",
}
TAGS = ["hardenml", "adversarial-robustness", "robustness-evaluation"]


def task_type(config: HardenConfig) -> str:
    """The Hub's task id: image classification for (C, H, W) or (H, W) inputs, else
    tabular classification."""
    if config.model.declared_input is None:
        # A model without declared inputs is a chat model: it generates text.
        return "text-generation"
    shape = tuple(config.model.input.shape)
    return "image-classification" if is_image_shape(shape) else "tabular-classification"


def _dataset(config: HardenConfig) -> dict[str, str]:
    """What the run evaluated: the configured data, or a chat model's prompt files (their
    hashes are the run's `data_sha256`)."""
    if config.declared_data is None:
        return {"type": "prompt-probes", "name": "prompt probes", "split": "probes"}
    data = config.data
    return {"type": data.source, "name": f"{data.source} ({data.split} split)", "split": data.split}


def model_card_metadata(config: HardenConfig, decision: GateDecision) -> dict[str, Any]:
    """The front matter of the card: tags and `model-index` for the decided run."""
    run = decision.run.payload
    attacks = threat_attacks(config, run)
    metrics = [
        _metric(m, attacks)
        for m in measurements(run)
        if m.metric in METRIC_TYPES and math.isfinite(m.value)
    ]
    result = {
        "task": {"type": task_type(config), "name": "classification robustness"},
        "dataset": {
            **_dataset(config),
            "args": {
                "sha256": str(run.get("data_sha256")),
                "n": int(run.get("n") or 0),
                "seed": int(run.get("seed") or 0),
                # The Hub asks a `source` for a URL; the run is named here instead.
                "evaluated_by": f"hardenml {__version__}, run {run.get('run_id')}",
            },
        },
        "metrics": metrics,
    }
    return {
        "tags": TAGS,
        "model-index": [{"name": decision.run.model, "results": [result]}],
    }


def _metric(m: Measurement, attacks: dict[str, str]) -> dict[str, Any]:
    attack = attacks.get(m.threat or "")
    corruption = is_corruption(attack)
    if m.threat is None or m.budget is None:
        where = "clean"
    else:
        at = f"severity {m.budget:g}" if corruption else f"budget {m.budget:g}"
        where = f"under {m.threat} at {at}"
    words = {
        "clean_accuracy": "clean accuracy",
        "robust_accuracy": "accuracy" if corruption else "robust accuracy",
        "ece": "expected calibration error",
        "brier": "Brier score",
    }[m.metric]
    name = words if m.metric == "clean_accuracy" else f"{words} {where}"
    args: dict[str, Any] = {
        "confidence_interval": [m.ci_low, m.ci_high],
        "confidence": m.confidence,
        "interval_method": interval_method(m.metric),
        "n": m.n,
        "seed": m.seed,
    }
    out: dict[str, Any] = {"type": METRIC_TYPES[m.metric], "name": name, "value": m.value}
    if m.threat is not None and m.budget is not None:
        out["config"] = str(UnitKey(m.threat, m.budget))
        args |= {"threat": m.threat, "attack": attack, "budget": m.budget}
    out["args"] = args
    out["verified"] = False
    return out
