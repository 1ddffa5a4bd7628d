"""Text threats on real text classifiers: they lower accuracy measurably, within budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.text_support import accuracy, first_test, minilm_model, rt_split, tfidf_model

from hardenml.targets import InputSpec, TargetError, TorchTarget
from hardenml.targets.minilm import embed
from hardenml.targets.text_codec import decode_texts
from hardenml.threats import available_threats, check_access, threat_class, threat_parameters
from hardenml.threats._text import stop_words, word_spans
from hardenml.threats.pgd import LinfPGD
from hardenml.threats.text_chars import OPERATIONS, CharacterEdits, edit_word
from hardenml.threats.text_words import TextFoolerJin2020

__all__ = ["minilm_model", "rt_split", "tfidf_model"]


def _attack(threat, target, x, y, budget: float, seed: int = 0):
    return threat(target, x, y, budget=budget, generator=torch.Generator().manual_seed(seed))


def _changed_words(before: str, after: str) -> int:
    a = [before[s:e] for s, e in word_spans(before)]
    b = [after[s:e] for s, e in word_spans(after)]
    return sum(u != v for u, v in zip(a, b, strict=False)) + abs(len(a) - len(b))


def test_character_edits_lower_tfidf_accuracy_within_the_edit_budget(rt_split, tfidf_model):
    x, y = first_test(rt_split, 60)
    clean = accuracy(tfidf_model, x, y)
    result = _attack(CharacterEdits(max_queries=200), tfidf_model, x, y, budget=2)
    robust = float(result.robust_correct.float().mean())
    assert clean >= 0.65 and robust <= clean - 0.2, (clean, robust)
    assert result.queries > 0
    flipped = (result.success & result.clean_correct).nonzero().flatten()
    assert len(flipped) > 0
    assert result.min_perturbation is not None
    assert bool((result.min_perturbation[flipped] <= 2).all())
    for i in flipped.tolist():
        before, after = decode_texts(x[i : i + 1])[0], decode_texts(result.x_adv[i : i + 1])[0]
        assert before != after
    again = _attack(CharacterEdits(max_queries=200), tfidf_model, x, y, budget=2)
    assert torch.equal(result.x_adv, again.x_adv), "same seed, same edits"


@pytest.mark.parametrize("operation", OPERATIONS)
def test_each_edit_changes_a_word_once(operation: str) -> None:
    rng = np.random.default_rng(0)
    edited = edit_word("Sparkling", operation, rng)
    assert edited is not None and edited != "Sparkling"
    assert abs(len(edited) - len("Sparkling")) <= 1


def test_bad_parameters_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="operations"):
        CharacterEdits(operations=["teleport"])
    with pytest.raises(ValueError, match="min_sentence_similarity"):
        TextFoolerJin2020(min_sentence_similarity=2.0)


def test_text_threats_and_tensor_models_refuse_each_other(tfidf_model, digits_mlp) -> None:
    with pytest.raises(TargetError, match="only text threats"):
        check_access(tfidf_model, {"pgd": LinfPGD(steps=1)})
    check_access(tfidf_model, {"typos": CharacterEdits()})
    image = TorchTarget(digits_mlp, input_spec=InputSpec(shape=(64,)), classes=list("0123456789"))
    with pytest.raises(TargetError, match="edit strings"):
        check_access(image, {"typos": CharacterEdits()})


@pytest.mark.slow
def test_textfooler_lowers_tfidf_accuracy_under_its_constraints(rt_split, tfidf_model):
    x, y = first_test(rt_split, 30)
    clean = accuracy(tfidf_model, x, y)
    threat = TextFoolerJin2020(candidates=20, max_queries=400)
    result = _attack(threat, tfidf_model, x, y, budget=2)
    robust = float(result.robust_correct.float().mean())
    assert robust <= clean - 0.1, (clean, robust)
    flipped = (result.success & result.clean_correct).nonzero().flatten().tolist()
    before = decode_texts(x[flipped])
    after = decode_texts(result.x_adv[flipped])
    stops = stop_words()
    similarity = (embed(before) * embed(after)).sum(axis=1)
    assert bool((similarity >= threat.min_sentence_similarity - 1e-4).all())
    for original, changed in zip(before, after, strict=True):
        words_changed = _changed_words(original, changed)
        assert words_changed in (1, 2), (original, changed)  # the budget, and a real edit
        kept = [original[s:e] for s, e in word_spans(original)]
        now = [changed[s:e] for s, e in word_spans(changed)]
        assert all(v == u for u, v in zip(kept, now, strict=True) if u.lower() in stops)


@pytest.mark.slow
def test_attacks_lower_the_minilm_classifier_accuracy(rt_split, minilm_model):
    x, y = first_test(rt_split, 24)
    clean = accuracy(minilm_model, x, y)
    typos = _attack(CharacterEdits(max_queries=120), minilm_model, x, y, budget=3)
    words = _attack(TextFoolerJin2020(candidates=15, max_queries=300), minilm_model, x, y, 2)
    assert clean >= 0.6
    for result in (typos, words):
        assert float(result.robust_correct.float().mean()) <= clean - 0.1


TEXT_THREATS = [n for n in available_threats() if threat_class(n).family == "text"]
# The word-level threats load the MiniLM encoder (tens of seconds, once per process).
SLOW_TEXT = {"textfooler"}


def test_every_registered_threat_has_a_contract_suite() -> None:
    from tests.test_chat_prompt_probes import PROMPT_PROBES
    from tests.test_threat_registry import TENSOR_THREATS

    # Prompt probes have their contract in tests/test_chat_prompt_probes.py.
    assert sorted(TENSOR_THREATS + TEXT_THREATS + PROMPT_PROBES) == available_threats()


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_TEXT else n for n in TEXT_THREATS],
)
def test_text_threat_contract(name: str, rt_split, tfidf_model) -> None:
    """The registry contract for threats that edit strings: the same checks as for tensor
    threats (shapes, success is misclassification, queries counted, misclassified inputs
    untouched, smallest flipping budget within the budget, same seed same result), with the
    bounds read as code points. A norm-ball size does not apply: the budget counts edits."""
    x, y = first_test(rt_split, 12)
    params = {"max_queries": 150} if "max_queries" in threat_parameters(name) else {}
    budget = 2.0
    before = tfidf_model.queries
    result = _attack(threat_class(name)(**params), tfidf_model, x, y, budget, seed=7)
    assert result.x_adv.shape == x.shape and result.x_adv.dtype == x.dtype
    assert result.success.shape == (12,) and result.clean_correct.shape == (12,)
    assert result.queries == tfidf_model.queries - before > 0
    assert int(result.x_adv.min()) >= 0 and int(result.x_adv.max()) <= 0x10FFFF
    wrong = ~result.clean_correct
    assert torch.equal(result.x_adv[wrong], x[wrong])
    assert torch.equal(result.success, (tfidf_model.predict(result.x_adv) != y) | wrong)
    if result.min_perturbation is not None:
        assert bool(torch.isnan(result.min_perturbation[~result.success]).all())
        assert bool((result.min_perturbation[result.success] <= budget).all())
    again = _attack(threat_class(name)(**params), tfidf_model, x, y, budget, seed=7)
    assert torch.equal(result.x_adv, again.x_adv) and result.queries == again.queries
    assert f"{budget:g}" in threat_class(name)(**params).describe(budget)
