"""`[model.input]` and `[data]` are required by the kinds that read them and by no other:
a chat config leaves both out, a PyTorch config that leaves one out exits 2 naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.test_chat_target import CHAT_WORKSPACE, TOKEN_ENV
from typer.testing import CliRunner

from hardenml.cli import app
from hardenml.config import ConfigError, HardenConfig, parse_config
from hardenml.targets import validate_target_config
from workspace import DIGITS_CONFIG, digits_workspace

runner = CliRunner()

DIGITS = DIGITS_CONFIG.format(
    weights="model.safetensors", min_clean=0.5, min_robust=0.0, max_samples=40, integrity="false"
)
INPUT_TABLE = "[model.input]\nshape = [64]\nbounds = [0.0, 1.0]\n"
DATA_TABLE = '[data]\nsource = "digits"\ntest_fraction = 0.25\nseed = 0\nmax_samples = 40\n'


def _chat_config(**overrides: str) -> str:
    fields = {
        "name": "chat",
        "base_url": "http://127.0.0.1:9",
        "token_env": TOKEN_ENV,
        "options": "",
        "threat": "extraction",
        "attack": "system-prompt-extraction",
        "threat_params": "",
        "confidence": 0.95,
        "min_accuracy": 0.5,
    }
    return CHAT_WORKSPACE.format(**{**fields, **overrides})


def test_a_chat_config_without_input_or_data_is_valid_and_seeds_with_zero() -> None:
    config = parse_config(_chat_config(), root=Path("."))
    validate_target_config(config)
    assert config.model.declared_input is None and config.declared_data is None
    assert config.seed == 0
    # A command that reads one anyway says which key, not an AttributeError.
    with pytest.raises(ConfigError) as info:
        _ = config.model.input.shape
    assert info.value.problems[0].key == "model.input"
    assert "model.kind 'chat' declares none" in str(info.value)
    with pytest.raises(ConfigError) as info:
        _ = config.data.source
    assert info.value.problems[0].key == "data"


def test_a_chat_config_that_declares_data_takes_its_seed() -> None:
    text = _chat_config() + '\n[data]\nsource = "prompts"\nseed = 7\n'
    config = parse_config(text, root=Path("."))
    validate_target_config(config)
    assert config.seed == 7


@pytest.mark.parametrize(
    ("table", "key"),
    [(INPUT_TABLE, "model.input"), (DATA_TABLE, "data")],
)
def test_a_pytorch_config_without_a_table_it_reads_exits_2_naming_it(
    digits_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, table: str, key: str
) -> None:
    assert table in DIGITS
    ws = digits_workspace(tmp_path, digits_weights, DIGITS.replace(table, ""))
    monkeypatch.chdir(ws)
    result = runner.invoke(app, ["scan"])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert f"{key}: found <missing>" in said
    assert "model.kind 'pytorch' reads it" in said
    assert "Traceback" not in result.output


def test_the_schema_requires_neither_table_and_the_snapshot_keeps_the_key_names() -> None:
    schema = HardenConfig.model_json_schema()
    assert "data" in schema["properties"] and "data" not in schema["required"]
    model = schema["$defs"]["ModelConfig"]
    assert "input" in model["properties"] and "input" not in model.get("required", [])
    dumped = parse_config(DIGITS, root=Path(".")).model_dump(mode="json")
    assert dumped["data"]["source"] == "digits"
    assert dumped["model"]["input"]["shape"] == [64]
