"""CheckList-style suites on a real text classifier: they find real failures."""

from __future__ import annotations

import pytest
import torch
from tests.text_support import first_test, rt_split, tfidf_model

from hardenml.config import BehaviourSuite
from hardenml.scan.behaviour import BehaviourError, _resolve, run_suite
from hardenml.scan.text_behaviour import negated, template_inputs, text_transform
from hardenml.targets.text_codec import decode_texts, encode_tensor

__all__ = ["rt_split", "tfidf_model"]
CLASSES = ["fresh", "rotten"]


def _suite(**fields: object) -> BehaviourSuite:
    return BehaviourSuite.model_validate({"name": "s", **fields})


def _run(suite: BehaviourSuite, target, x, y):
    return run_suite(
        suite, target, x, y, classes=CLASSES, feature_names=None, confidence=0.95, seed=0
    )


def test_one_typo_changes_some_tfidf_decisions(rt_split, tfidf_model) -> None:
    x, y = first_test(rt_split, 200)
    result = _run(_suite(kind="invariance", transform="typos", severity=1), tfidf_model, x, y)
    assert result.n > 150 and result.failures > 0, "a bag of words loses the misspelt word"
    lo, hi = result.failure_ci
    assert lo <= result.failure_rate <= hi
    assert decode_texts(result.examples["x"]) != decode_texts(result.examples["x_changed"])


def test_negating_fresh_reviews_fails_to_lower_p_fresh_for_some(rt_split, tfidf_model) -> None:
    x, y = first_test(rt_split, 300)
    suite = _suite(kind="directional", edit="negation", **{"class": "fresh"}, expect="decrease")
    result = _run(suite, tfidf_model, x, y)
    assert result.n > 30 and result.failures > 0, "a bag of words gives 'not' one small weight"
    assert all(" not" in t for t in decode_texts(result.examples["x_changed"]))
    assert set(result.examples["y"].tolist()) == {0}, "only fresh statements are negated"


def test_templates_test_every_combination(tfidf_model) -> None:
    suite = _suite(
        kind="minimum",
        templates=["A {adj} film.", "The {noun} was {adj}."],
        fill={"adj": ["great", "superb"], "noun": ["plot", "cast", "score"]},
        **{"class": "fresh"},
        min_accuracy=0.9,
    )
    x, y = template_inputs(suite, 400, 0)
    assert len(x) == 2 + 6 and bool((y == 0).all())
    assert "The cast was superb." in decode_texts(x)
    result = _run(suite, tfidf_model, x[:0], y[:0])
    assert result.n == 8


def test_name_swaps_change_only_names() -> None:
    x = encode_tensor(["John loved it.", "No names here."], 50)
    changed, tested = text_transform(
        _suite(kind="invariance", transform="name-swap"), x, torch.Generator().manual_seed(0)
    )
    after = decode_texts(changed)
    assert tested.tolist() == [True, False]
    assert after[0].endswith(" loved it.") and not after[0].startswith("John")
    assert after[1] == "No names here."
    negations, applies = negated(encode_tensor(["It is good.", "Good!"], 40))
    assert decode_texts(negations)[0] == "It is not good." and applies.tolist() == [True, False]


def test_suites_refuse_the_other_modality() -> None:
    with pytest.raises(BehaviourError, match="model reads strings"):
        _resolve(_suite(kind="invariance", transform="blur"), (400,), None, text=True)
    with pytest.raises(BehaviourError, match="need a text model"):
        _resolve(_suite(kind="invariance", transform="typos"), (64,), None, text=False)
    with pytest.raises(ValueError, match="edit suite needs class"):
        _suite(kind="directional", edit="negation", expect="decrease")
    with pytest.raises(ValueError, match="fill goes with templates"):
        _suite(kind="minimum", min_accuracy=0.5, fill={"a": ["b"]})
