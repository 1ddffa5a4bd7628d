"""The config schema: valid files load, bad ones name the key, value, expectation and line."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardenml.config import ConfigError, find_config, load_config, parse_config
from hardenml.threats import validate_threats
from workspace import DIGITS_CONFIG

GOOD = DIGITS_CONFIG.format(
    weights="model.safetensors", min_clean=0.8, min_robust=0.5, max_samples=100, integrity="true"
)


def problems(text: str) -> list:
    with pytest.raises(ConfigError) as info:
        cfg = parse_config(text, root=Path("."))
        validate_threats(cfg)
    return info.value.problems


def test_good_config_loads_with_defaults():
    cfg = parse_config(GOOD, root=Path("/w"))
    assert cfg.model.name == "digits-mlp"
    assert cfg.threats[0].params == {"steps": 10}
    assert cfg.ledger_path == Path("/w/hardenml.db")
    assert cfg.policy.sla_days.critical == 7
    assert cfg.owner_for("pgd-linf") == "robustness-team"
    assert cfg.owner_for("other") == "ml-platform"
    assert set(validate_threats(cfg)) == {"pgd-linf"}


def test_starter_config_from_init_is_valid(tmp_path: Path):
    from typer.testing import CliRunner

    from hardenml.cli import app

    result = CliRunner().invoke(app, ["init", "--path", str(tmp_path / "hardenml.toml")])
    assert result.exit_code == 0, result.output
    cfg = load_config(tmp_path / "hardenml.toml")
    validate_threats(cfg)
    assert cfg.policy.robust[0].threat == "pgd-linf"


def test_malformed_toml_names_the_line():
    (p,) = problems(GOOD.replace('name = "digits-mlp"', 'name = "digits-mlp'))
    assert p.key == "<toml>" and p.line == 7  # the model name line
    assert "valid TOML" in str(p)


def test_unknown_key_is_named_with_its_line():
    text = GOOD.replace("min_clean_accuracy = 0.8", "min_clean_acuracy = 0.8")
    (p,) = problems(text)
    assert p.key == "policy.min_clean_acuracy"
    assert "no such key" in p.expected
    assert text.splitlines()[p.line - 1].startswith("min_clean_acuracy")


def test_wrong_type_names_key_value_and_expectation():
    (p,) = problems(GOOD.replace("max_samples = 100", 'max_samples = "lots"'))
    assert p.key == "data.max_samples"
    assert p.value == "lots"
    assert "integer" in p.expected
    assert p.line is not None


def test_missing_required_key():
    text = GOOD.replace('kind = "pytorch"\n', "")
    found = problems(text)
    assert any(p.key == "model.kind" and "required" in p.expected for p in found)


def test_unknown_attack_parameter_is_named():
    (p,) = problems(GOOD.replace("steps = 10", "stepz = 10"))
    assert p.key == "threats[0].stepz"
    assert "steps" in p.expected  # lists what the attack accepts
    assert p.line is not None


def test_unknown_attack_lists_registered_ones():
    (p,) = problems(GOOD.replace('attack = "pgd"', 'attack = "pgdd"'))
    assert p.key == "threats[0].attack" and "pgd" in p.expected


def test_policy_must_name_a_declared_threat_and_budget():
    found = problems(GOOD.replace("budget = 0.1\n", "budget = 0.3\n"))
    assert "not among the budgets" in str(found[0])


def test_bad_attack_value_is_reported():
    (p,) = problems(GOOD.replace("steps = 10", "steps = 0"))
    assert p.key == "threats[0]" and "at least 1" in p.expected


def test_missing_config_file_explains_init(tmp_path: Path):
    (tmp_path / ".git").mkdir()  # bounds the search upwards
    with pytest.raises(ConfigError, match="hardenml init"):
        find_config(None, cwd=tmp_path, environ={})


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_escapes_as_a_traceback(text: str):
    """Whatever the file holds, the loader either succeeds or raises ConfigError."""
    try:
        parse_config(text, root=Path("."))
    except ConfigError as exc:
        assert exc.problems


def test_config_is_found_in_the_nearest_folder_above(tmp_path: Path):
    (tmp_path / ".git").mkdir()
    (tmp_path / "hardenml.toml").write_text(GOOD)
    deep = tmp_path / "models" / "v2"
    deep.mkdir(parents=True)
    assert find_config(None, cwd=deep, environ={}) == tmp_path / "hardenml.toml"
    # The nearest wins.
    (tmp_path / "models" / "hardenml.toml").write_text(GOOD)
    assert find_config(None, cwd=deep, environ={}) == tmp_path / "models" / "hardenml.toml"


def test_the_search_stops_at_the_repository_root(tmp_path: Path):
    (tmp_path / "hardenml.toml").write_text(GOOD)  # outside the project
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (project / "src").mkdir()
    with pytest.raises(ConfigError) as info:
        find_config(None, cwd=project / "src", environ={})
    (problem,) = info.value.problems
    assert f"up to {project}" in problem.expected and "HARDENML_CONFIG" in problem.expected


def test_hardenml_config_names_the_file(tmp_path: Path):
    (tmp_path / "hardenml.toml").write_text(GOOD)
    other = tmp_path / "ci" / "release.toml"
    other.parent.mkdir()
    other.write_text(GOOD)
    env = {"HARDENML_CONFIG": "ci/release.toml"}
    assert find_config(None, cwd=tmp_path, environ=env) == tmp_path / "ci" / "release.toml"
    # --config still wins over the variable.
    explicit = tmp_path / "hardenml.toml"
    assert find_config(explicit, cwd=tmp_path, environ=env) == explicit
    with pytest.raises(ConfigError) as info:
        find_config(None, cwd=tmp_path, environ={"HARDENML_CONFIG": "missing.toml"})
    (problem,) = info.value.problems
    assert problem.key == "HARDENML_CONFIG" and problem.value == "missing.toml"
