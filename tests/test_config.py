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
    threats = validate_threats(cfg)
    # The release path gates on the ensemble, evaluated sequentially (issue 10, item 5).
    assert cfg.policy.robust[0].threat == "autoattack-linf"
    assert type(threats["autoattack-linf"]).__name__ == "AutoAttackEnsemble"
    assert cfg.scan.sequential
    # Its commented examples parse too: the declared preprocessing and the PGD curve.
    text = (tmp_path / "hardenml.toml").read_text()
    text = text.replace('# preprocessing = ["bit-depth:4"]', 'preprocessing = ["bit-depth:4"]')
    start, end = text.index("# [[threats]]"), text.index("[scan]")
    curve = "\n".join(line.removeprefix("# ") for line in text[start:end].splitlines())
    example = parse_config(text[:start] + curve + "\n" + text[end:], root=tmp_path)
    validate_threats(example)
    assert example.model.preprocessing == ["bit-depth:4"]
    assert [t.name for t in example.threats] == ["autoattack-linf", "pgd-linf"]


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
    text = GOOD.replace("budget = 0.1\n", "budget = 0.3\n")
    (p,) = problems(text)
    # The key, its line and the valid budgets, not the whole config as `<top level>`.
    assert p.key == "policy.robust[0].budget" and p.value == 0.3
    assert text.splitlines()[p.line - 1] == "budget = 0.3"
    assert "[0.02, 0.1]" in p.expected and "pgd-linf" in p.expected
    (p,) = problems(GOOD.replace('threat = "pgd-linf"', 'threat = "pgd"'))
    assert p.key == "policy.robust[0].threat" and "['pgd-linf']" in p.expected


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("budgets = [0.02, 0.1]", "budgets = [0.02, nan]", "threats[0].budgets[1]"),
        ("budgets = [0.02, 0.1]", "budgets = [inf, 0.1]", "threats[0].budgets[0]"),
        ("budget = 0.1\n", "budget = nan\n", "policy.robust[0].budget"),
        ("min_accuracy = 0.5", "min_accuracy = nan", "policy.robust[0].min_accuracy"),
        ("min_clean_accuracy = 0.8", "min_clean_accuracy = -inf", "policy.min_clean_accuracy"),
        ("bounds = [0.0, 1.0]", "bounds = [0.0, inf]", "model.input.bounds[1]"),
        ("steps = 10", "steps = 10\nstep_size = nan", "threats[0].step_size"),
        ("hidden = 32 }", "hidden = 32, scale = [1.0, nan] }", "model.factory_kwargs.scale[1]"),
    ],
)
def test_nan_and_inf_are_refused_everywhere(old: str, new: str, key: str):
    text = GOOD.replace(old, new)
    assert text != GOOD
    found = problems(text)
    assert [p.key for p in found] == [key], found
    assert "finite number" in found[0].expected and found[0].line is not None


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


@pytest.mark.parametrize(
    ("old", "new", "key", "expected"),
    [
        ("steps = 10", "steps = 10.5", "threats[0].steps", "whole number (int)"),
        ("steps = 10", 'steps = "ten"', "threats[0].steps", "whole number (int)"),
        ("steps = 10", "steps = true", "threats[0].steps", "whole number (int)"),
        ("steps = 10", "random_start = 1", "threats[0].random_start", "true or false"),
        ("steps = 10", 'step_size = "big"', "threats[0].step_size", "finite number"),
        (
            'attack = "pgd"\nbudgets = [0.02, 0.1]\nsteps = 10',
            'attack = "tabular"\nbudgets = [0.02, 0.1]\nfeature_bounds = [[0, 1], [0, "a"]]',
            "threats[0].feature_bounds",
            "item [1] = 'a' is not a finite number",
        ),
        (
            'attack = "pgd"\nbudgets = [0.02, 0.1]\nsteps = 10',
            'attack = "hopskipjump"\nbudgets = [0.02, 0.1]\nnorm = "l3"',
            "threats[0].norm",
            "one of ['linf', 'l2', 'none']",
        ),
    ],
)
def test_attack_parameters_are_checked_against_the_constructor(old, new, key, expected):
    """Parameters reach the attack's constructor as keywords: a wrong type is named before
    it is built (it used to crash inside it: "'<' not supported between 'str' and 'int'")."""
    text = GOOD.replace(old, new)
    assert text != GOOD
    (p,) = problems(text)
    assert p.key == key and expected in p.expected, p
    assert text.splitlines()[p.line - 1].startswith(key.rpartition(".")[2])


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
