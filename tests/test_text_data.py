"""Text inputs: the code-point codec, the Rotten Tomatoes and JSONL loaders, the config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from hardenml.config import InputConfig
from hardenml.data import DataError, fit_to_shape, load_source, split
from hardenml.targets.text_codec import TextCodecError, decode_texts, encode_texts

TEXT = st.text(alphabet=st.characters(blacklist_characters="\x00"), max_size=40)


@given(st.lists(TEXT, max_size=6))
def test_codec_round_trips_any_text(texts: list[str]) -> None:
    assert decode_texts(encode_texts(texts, 40)) == texts


@pytest.mark.parametrize(
    ("row", "message"),
    [(12, "not a string"), ("a\x00b", "NUL"), ("x" * 11, "more than the model's 10")],
)
def test_codec_names_the_row_it_cannot_take(row: object, message: str) -> None:
    with pytest.raises(TextCodecError, match=message) as info:
        encode_texts(["fine", row], 10)  # type: ignore[list-item]
    assert "row 1" in str(info.value)


def test_rotten_tomatoes_is_the_labelled_snippets_with_a_stable_hash() -> None:
    data = load_source("rotten_tomatoes")
    assert data.classes == ("fresh", "rotten") and len(data) == 12808
    assert data.provenance["modality"] == "text" and len(data.provenance["file_sha256"]) == 64
    padded = fit_to_shape(data, (400,))
    assert padded.x.shape == (12808, 400)
    assert padded.sha256 == data.sha256, "the hash is over the texts, not the padding"
    train, test = split(padded, test_fraction=0.2, seed=0)
    again, _ = split(padded, test_fraction=0.2, seed=0)
    assert train.sha256 == again.sha256 and len(test) == 2562
    with pytest.raises(DataError, match=r"more than model.input.shape = \[100\]"):
        fit_to_shape(data, (100,))


def _jsonl(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "texts.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_texts_load_including_empty_strings(tmp_path: Path) -> None:
    rows = [{"text": "A joy.", "label": "fresh"}, {"text": "", "label": "rotten"}]
    data = load_source(str(_jsonl(tmp_path, [json.dumps(r) for r in rows])))
    assert decode_texts(data.x) == ["A joy.", ""] and data.classes == ("fresh", "rotten")
    assert np.array_equal(data.y, [0, 1])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": 3, "label": "fresh"}', "line 2: text is a int, not a string"),
        ('{"text": "ok"}', 'line 2: expected {"text"'),
        ("not json", "line 2: not JSON"),
        ('{"text": "ok", "label": [1]}', "line 2: the label must be"),
        ('{"text": "a\\u0000b", "label": "fresh"}', "NUL"),
    ],
)
def test_jsonl_rows_that_are_not_texts_are_named(tmp_path: Path, line: str, message: str) -> None:
    path = _jsonl(tmp_path, ['{"text": "good", "label": "fresh"}', line])
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("{", r"\{")):
        load_source(str(path))


def test_text_input_config_takes_only_a_width() -> None:
    assert InputConfig(modality="text", shape=[300]).shape == [300]
    with pytest.raises(ValidationError, match="remove"):
        InputConfig(modality="text", shape=[300], bounds=(0.0, 1.0))
    with pytest.raises(ValidationError, match="one number"):
        InputConfig(modality="text", shape=[3, 100])
