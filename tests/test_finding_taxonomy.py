"""Findings carry the MITRE ATLAS and OWASP ML Top Ten ids of their threat, end to end: the
ledger's finding event, `findings show --json`, the JSON and HTML reports, and SARIF's
`runs[].taxonomies` with `rules[].relationships` into them (validated against the schema)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from hardenml.cli import app
from hardenml.ledger import Ledger
from hardenml.threats import threat_class
from hardenml.threats.taxonomy import finding_taxonomy, taxonomy_for
from test_reports import validate_sarif
from workspace import write_workspace

runner = CliRunner()


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory, digits_mlp: nn.Module) -> Path:
    folder = tmp_path_factory.mktemp("taxonomy")
    weights = folder / "mlp.safetensors"
    save_file({k: v.contiguous() for k, v in digits_mlp.state_dict().items()}, str(weights))
    cfg = write_workspace(folder / "ws", weights, min_clean=0.8, min_robust=0.95)
    result = runner.invoke(app, ["gate", "--config", str(cfg)], env={"HARDENML_LEDGER_KEY": ""})
    assert result.exit_code == 1, result.output
    return cfg


def expected() -> dict:
    return finding_taxonomy(threat_class("pgd"))


def test_the_ledger_and_findings_show_carry_the_threats_taxonomy(gated: Path) -> None:
    assert expected()["atlas"][0] == "AML.T0043.000"  # white-box optimisation, by PGD's access
    opened = [
        e for e in Ledger(gated.parent / "hardenml.db").events() if e.kind == "finding.opened"
    ]
    robust = [e for e in opened if e.payload["threat"] == "pgd-linf"]
    assert robust, "the strict robust threshold opens a finding"
    for event in robust:
        assert event.payload["taxonomy"] == expected()
    shown = runner.invoke(
        app, ["findings", "show", robust[0].payload["finding_id"], "--json", "--config", str(gated)]
    )
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["taxonomy"] == expected()
    text = runner.invoke(
        app, ["findings", "show", robust[0].payload["finding_id"], "--config", str(gated)]
    )
    assert "AML.T0043.000" in text.output and "ML01:2023" in text.output


def test_the_json_and_html_reports_show_the_ids(gated: Path) -> None:
    report = json.loads((gated.parent / "gate-report.json").read_text())
    tagged = [f for f in report["blocking_findings"] if f["taxonomy"]]
    assert tagged and all(f["taxonomy"] == expected() for f in tagged)
    html = (gated.parent / "reports" / "report.html").read_text()
    for taxon_id in (*expected()["atlas"], *expected()["owasp_ml"]):
        assert f"<code>{taxon_id}</code>" in html


def test_sarif_rules_relate_to_taxa_its_taxonomies_define(gated: Path) -> None:
    log = json.loads((gated.parent / "reports" / "report.sarif").read_text())
    validate_sarif(log)
    run = log["runs"][0]
    taxonomies = run["taxonomies"]
    assert [t["name"] for t in taxonomies] == [
        "MITRE ATLAS",
        "OWASP Machine Learning Security Top Ten",
    ]
    entry = taxonomy_for(threat_class("pgd"))
    threat_rules = [r for r in run["tool"]["driver"]["rules"] if r["properties"].get("threat")]
    assert threat_rules
    for rule in threat_rules:
        targets = [rel["target"] for rel in rule["relationships"]]
        assert [t["id"] for t in targets] == entry.ids
        for rel in rule["relationships"]:
            assert rel["kinds"] == ["superset"]
            target = rel["target"]
            component = taxonomies[target["toolComponent"]["index"]]
            assert component["name"] == target["toolComponent"]["name"]
            assert component["taxa"][target["index"]]["id"] == target["id"]
    atlas_taxa = {t["id"]: t for t in taxonomies[0]["taxa"]}
    assert atlas_taxa["AML.T0043.000"]["helpUri"] == entry.atlas[0].url
    clean_rule = next(
        r for r in run["tool"]["driver"]["rules"] if r["id"] == "hardenml/clean_accuracy"
    )
    assert "relationships" not in clean_rule  # no attacker, no attack technique
