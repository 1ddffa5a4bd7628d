"""The JSON Schemas in docs/schemas: regenerated from the models and compared with the
checked-in copies, then used on real files (configs the loader accepts, gate reports the
gate wrote) with jsonschema."""

from __future__ import annotations

import json
import re
import tomllib
from importlib.resources import files
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from hardenml.cli import app
from hardenml.config import parse_config
from hardenml.report.schemas import (
    CONFIG_SCHEMA_FILE,
    GATE_REPORT_SCHEMA_FILE,
    config_schema,
    gate_report_schema,
    schema_files,
)
from hardenml.workflow import GATE_REPORT_NAME, Workspace, gate
from test_reports_support import CONFIG as REPORTS_CONFIG
from workspace import DIGITS_CONFIG, write_workspace

DOCS = Path(__file__).parents[1] / "docs"
SCHEMAS = DOCS / "schemas"


def validator(schema: dict) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_the_checked_in_schemas_are_what_the_models_generate(tmp_path: Path) -> None:
    """If this fails, run `hardenml schema --out docs/schemas` and commit the result (and
    bump GATE_REPORT_SCHEMA_VERSION for a change a reader would notice)."""
    for name, text in schema_files().items():
        assert (SCHEMAS / name).read_text() == text, name
    result = CliRunner().invoke(app, ["schema", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(schema_files())
    shown = CliRunner().invoke(app, ["schema", "config"])
    assert shown.stdout == (SCHEMAS / CONFIG_SCHEMA_FILE).read_text()


def _doc_configs() -> list[str]:
    """Every full config shown in the docs (TOML blocks with a [project] table)."""
    blocks = re.findall(r"```toml\n(.*?)```", (DOCS / "config.md").read_text(), flags=re.S)
    return [b for b in blocks if "[project]" in b]


def _real_configs() -> dict[str, str]:
    configs = {
        "starter": files("hardenml").joinpath("templates/hardenml.toml").read_text(),
        "workspace": DIGITS_CONFIG.format(
            weights="m.safetensors", min_clean=0.8, min_robust=0.5, max_samples=60, integrity="true"
        ),
        "reports": REPORTS_CONFIG.format(project="p", model="m", owner="o", shape="[64]"),
    }
    configs |= {f"docs[{i}]": text for i, text in enumerate(_doc_configs())}
    return configs


@pytest.mark.parametrize("name", sorted(_real_configs()))
def test_configs_the_loader_accepts_validate_against_the_schema(name: str) -> None:
    text = _real_configs()[name]
    parse_config(text, root=Path("."))  # the loader accepts it
    validator(config_schema()).validate(tomllib.loads(text))


def test_the_config_schema_rejects_what_the_loader_rejects() -> None:
    check = validator(config_schema())
    good = tomllib.loads(_real_configs()["workspace"])
    typo = {**good, "policy": {**good["policy"], "min_clean_acuracy": 0.9}}
    assert not check.is_valid(typo)
    out_of_range = {**good, "policy": {**good["policy"], "min_clean_accuracy": 1.5}}
    assert not check.is_valid(out_of_range)
    no_model = {k: v for k, v in good.items() if k != "model"}
    assert not check.is_valid(no_model)
    # Attack parameters are free keys of a threat, as the loader allows.
    assert check.is_valid({**good, "threats": [{**good["threats"][0], "restarts": 2}]})


def test_gate_reports_validate_against_their_schema(tmp_path: Path, digits_weights: Path) -> None:
    check = validator(gate_report_schema())
    ws = Workspace.open(write_workspace(tmp_path, digits_weights, max_samples=60))
    gate(ws)
    report = json.loads((tmp_path / GATE_REPORT_NAME).read_text())
    check.validate(report)
    assert report["checks"] and report["measurements"]
    # The documented example, too.
    example = re.search(
        r"## Example.*?```json\n(.*?)```", (DOCS / "gate-report.md").read_text(), flags=re.S
    )
    assert example is not None
    check.validate(json.loads(example.group(1)))
    assert report["ledger"]["events"] >= 1 and len(report["ledger"]["head_hash"]) == 64
    # Readers ignore keys they do not know; a later minor version may add them.
    check.validate({**report, "signature": {"key": "k", "value": "v"}})
    assert not check.is_valid({**report, "ledger": {"events": 1, "head_hash": "not a hash"}})
    broken = {**report, "decision": {**report["decision"], "status": "maybe"}}
    assert not check.is_valid(broken)
    assert not check.is_valid({k: v for k, v in report.items() if k != "checks"})


def test_schema_names_a_schema_or_a_folder() -> None:
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 2 and "config, gate-report or prompt-submission" in result.output
    shown = CliRunner().invoke(app, ["schema", "gate-report"])
    assert json.loads(shown.stdout)["title"] == "gate-report.json"
    prompts = CliRunner().invoke(app, ["schema", "prompt-submission"])
    assert json.loads(prompts.stdout)["properties"]["format"]["const"] == (
        "hardenml.prompt-submission/1"
    )
    assert (SCHEMAS / GATE_REPORT_SCHEMA_FILE).is_file()
