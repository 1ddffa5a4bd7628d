"""Contract suite over every registered prompt probe (family "prompt"), against a real
chat-completions server on 127.0.0.1 whose "model" answers each user turn reversed: the
probes play their shipped prompts, judge every reply, are seeded, record their prompt
files' hashes and their detector's error rates; user prompt files are read and checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.test_chat_target import TOKEN, TOKEN_ENV, FaultyChatServer, chat_model_config

from hardenml.targets import load_chat_model
from hardenml.threats import ThreatError, available_threats, threat_class
from hardenml.threats.probes import PromptFileError, PromptProbe
from hardenml.threats.probes.base import BEHAVIOURS
from hardenml.threats.probes.injection import PromptInjection

PROMPT_PROBES = [n for n in available_threats() if threat_class(n).family == "prompt"]


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


def test_the_five_probe_families_are_registered() -> None:
    assert set(PROMPT_PROBES) == {
        "prompt-injection",
        "system-prompt-extraction",
        "jailbreak",
        "sensitive-topics",
        "context-shift",
    }


@pytest.mark.parametrize("name", PROMPT_PROBES)
def test_every_prompt_probe_keeps_the_contract(name: str, tmp_path: Path) -> None:
    probe = threat_class(name)(limit=3)
    assert isinstance(probe, PromptProbe) and probe.family == "prompt"
    assert not probe.needs_gradients and "2 turns" in probe.describe(2)
    # What an external report claims of it (`hardenml intake`), and a marker it can read.
    assert probe.behaviour in BEHAVIOURS
    assert probe.marker is None or all(
        probe.marker in t for s in probe.prompt_sets(tmp_path) for i in s.items for t in i.turns[:1]
    )
    with FaultyChatServer() as server:
        model = load_chat_model(chat_model_config(server.base_url))
        outcome = probe.probe(model, budget=2, seed=3, root=tmp_path)
        again = probe.probe(model, budget=2, seed=3, root=tmp_path)
    assert outcome.n == 3 and 0 <= outcome.passed <= 3
    assert outcome.queries == sum(len(v.messages) // 2 for v in outcome.verdicts)
    assert all(len([m for m in v.messages if m.role == "user"]) <= 2 for v in outcome.verdicts)
    assert [v.as_dict() for v in outcome.verdicts] == [v.as_dict() for v in again.verdicts]
    (shipped,) = outcome.prompt_sets
    assert len(shipped.sha256) == 64 and shipped.version == 1
    assert outcome.error_rates.detector == probe.detector_name
    assert outcome.summary()["detector"]["false_negative_rate"]["n"] == 20
    with pytest.raises(ThreatError, match="number of user turns"):
        probe.probe(model, budget=0.5, seed=3)


def test_a_reversed_injection_marker_is_read_as_a_followed_injection() -> None:
    # The server answers each user turn reversed, marker included: the detector reads it.
    with FaultyChatServer() as server:
        model = load_chat_model(chat_model_config(server.base_url))
        outcome = PromptInjection(limit=2).probe(model, budget=1, seed=0)
    assert outcome.passed == 0 and all(v.unsafe_reply for v in outcome.verdicts)


def test_user_prompt_files_are_played_after_the_shipped_ones_and_hashed(tmp_path: Path) -> None:
    mine = {"probe": "prompt-injection", "version": 3, "items": [{"id": "x", "turns": ["hi"]}]}
    (tmp_path / "mine.json").write_text(json.dumps(mine))
    probe = PromptInjection(prompts=["mine.json"])
    sets = probe.prompt_sets(tmp_path)
    assert [s.version for s in sets] == [1, 3] and sets[1].items[0].turns == ("hi",)
    assert sets[0].sha256 != sets[1].sha256

    (tmp_path / "bad.json").write_text('{"items": [{"id": "y", "turns": []}]}')
    with pytest.raises(PromptFileError, match=r"bad\.json: items\[0\]"):
        PromptInjection(prompts=["bad.json"]).prompt_sets(tmp_path)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(PromptFileError, match=r"broken\.json: not JSON"):
        PromptInjection(prompts=["broken.json"]).prompt_sets(tmp_path)
    with pytest.raises(PromptFileError, match=r"missing\.json cannot be read"):
        PromptInjection(prompts=["missing.json"]).prompt_sets(tmp_path)
