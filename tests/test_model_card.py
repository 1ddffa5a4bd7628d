"""The model card as the Hugging Face Hub reads it: `huggingface_hub.ModelCard` parses its
front matter, and its `model-index` holds every clean and robust accuracy, ECE and Brier
score of the run with its interval and the interval's method."""

from __future__ import annotations

import math

import pytest
import yaml
from huggingface_hub import ModelCard
from torch import nn

from hardenml.records import Measurement
from hardenml.report import MODEL_CARD_NAME, model_card_section
from hardenml.report.yaml_text import dump
from hardenml.scan.metrics import BOOTSTRAP, WILSON
from test_reports_support import MODEL, PROJECT, Gated, gated_workspace


@pytest.fixture(scope="module")
def gated(digits_mlp: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Gated:
    return gated_workspace(tmp_path_factory.mktemp("card"), digits_mlp)


def _measurements(gated: Gated) -> list[Measurement]:
    return [Measurement.from_dict(m) for m in gated.decision.run.payload["measurements"]]


def test_huggingface_hub_reads_every_accuracy_with_its_interval(gated: Gated) -> None:
    text = (gated.reports / MODEL_CARD_NAME).read_text()
    card = ModelCard(text)
    assert card.data.model_name == MODEL  # the hostile name, exactly, as data
    results = card.data.eval_results
    assert results, "the Hub found no evaluation results"
    by_name = {r.metric_name: r for r in results}
    measured = {m.key: m for m in _measurements(gated)}
    clean = measured["clean_accuracy"]
    assert by_name["clean accuracy"].metric_type == "accuracy"
    assert by_name["clean accuracy"].metric_value == pytest.approx(clean.value)
    budgets = gated.ws.config.threats[0].budgets
    for budget in budgets:
        m = measured[f"robust_accuracy[pgd-linf@{budget:g}]"]
        r = by_name[f"robust accuracy under pgd-linf at budget {budget:g}"]
        assert r.metric_type == "accuracy" and r.metric_config == f"pgd-linf@{budget:g}"
        assert r.metric_value == pytest.approx(m.value)
        assert r.metric_args["confidence_interval"] == pytest.approx([m.ci_low, m.ci_high])
        assert r.metric_args["interval_method"] == WILSON
        assert r.metric_args["n"] == m.n and r.metric_args["attack"] == "pgd"
    for r in results:
        assert r.task_type == "tabular-classification" and r.dataset_type == "digits"
        assert r.dataset_split == "test" and r.verified is False
        assert r.dataset_args["sha256"] == gated.decision.run.payload["data_sha256"]
    assert "hardenml" in card.data.tags


def test_calibration_metrics_say_their_intervals_are_bootstrapped(gated: Gated) -> None:
    card = ModelCard((gated.reports / MODEL_CARD_NAME).read_text())
    calibration = [r for r in card.data.eval_results if r.metric_type != "accuracy"]
    assert {r.metric_type for r in calibration} == {"expected_calibration_error", "brier_score"}
    measured = {m.key: m for m in _measurements(gated)}
    for r in calibration:
        assert r.metric_args["interval_method"] == BOOTSTRAP
        key = "ece" if r.metric_type == "expected_calibration_error" else "brier"
        unit = r.metric_config
        m = measured[key if unit is None else f"{key}[{unit}]"]
        assert r.metric_value == pytest.approx(m.value)
    # The body no longer calls every interval Wilson: the "other measurements" table says
    # how each was computed.
    body = card.text
    assert "| ece | - | - |" in body
    ece_row = next(line for line in body.splitlines() if line.startswith("| ece | - | - |"))
    assert ece_row.endswith(f"| {BOOTSTRAP} |")
    assert "95% Wilson score intervals |" not in body


def test_the_body_is_the_robustness_section_below_the_front_matter(gated: Gated) -> None:
    text = model_card_section(gated.ws.config, gated.decision, gated.findings)
    assert text.startswith("---\n")
    card = ModelCard(text)
    assert card.text.lstrip().startswith("## Robustness\n")
    # No hostile name raw anywhere, front matter included (it reads back exactly above).
    for hostile in (PROJECT, MODEL):
        assert hostile not in text


@pytest.mark.parametrize(
    "hostile",
    [
        "a: b",
        "---",
        "#x",
        "<script>&amp;",
        '"quoted" \\ back',
        "line\nbreak",
        "\u2028sep",
        "emoji \U0001f600",
        "",
    ],
)
def test_front_matter_strings_survive_a_yaml_reader(hostile: str) -> None:
    data = {"model-index": [{"name": hostile, "results": [{"metrics": [{"value": 0.5}]}]}]}
    text = dump(data)
    assert yaml.safe_load(text) == data
    assert "\n---" not in text


def test_non_finite_numbers_are_refused_not_written() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        dump({"value": math.nan})
