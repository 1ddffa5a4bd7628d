"""`hardenml report compliance`: each requirement the threat model names, with its checks,
findings and evidence from a real scanned and gated workspace; "no evidence" where there is
none; read-only; bad ids and check names are usage errors naming the key."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hardenml.cli import app
from hardenml.ledger import Ledger
from hardenml.report.regulation import requirement, requirement_ids
from workspace import write_workspace

runner = CliRunner()
ENV = {"HARDENML_LEDGER_KEY": ""}

REQUIREMENTS = """
[[requirements]]
id = "EU-AIA-15.5"
checks = ["robust_accuracy[pgd-linf@0.1]"]
threats = ["pgd-linf"]
rationale = "PGD at the policy budget is the evasion attack Article 15(5) names."

[[requirements]]
id = "NIST-MEASURE-2.3"
checks = ["clean_accuracy"]

[[requirements]]
id = "NIST-MEASURE-2.10"
"""


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False, env=ENV)


@pytest.fixture
def workspace(tmp_path: Path, digits_weights: Path) -> Path:
    cfg = write_workspace(tmp_path / "ws", digits_weights, min_clean=0.8, min_robust=0.95)
    cfg.write_text(cfg.read_text() + REQUIREMENTS)
    return cfg


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def sections(markdown: str) -> dict[str, str]:
    parts = markdown.split("\n## ")[1:]
    return {part.split(":", 1)[0]: part for part in parts}


def test_the_catalogue_names_a_source_for_every_requirement() -> None:
    ids = requirement_ids()
    assert {"EU-AIA-15.1", "EU-AIA-15.5", "NIST-MEASURE-2.5", "NIST-MEASURE-2.7"} <= set(ids)
    for requirement_id in ids:
        entry = requirement(requirement_id)
        assert entry.section and entry.summary and entry.source_url.startswith("https://")


def test_every_catalogue_entry_names_its_source_url_and_where_it_was_checked() -> None:
    """An auditor can retrace each summary: a source URL per requirement and per source, a
    dated note of what the text was checked against, and the quote the summary cites."""
    data = json.loads(files("hardenml.report").joinpath("regulation.json").read_text("utf-8"))
    for name, source in data["sources"].items():
        assert source["url"].startswith("https://"), name
        assert len(source["checked_against"]) > 40, name
    for requirement_id, entry in data["requirements"].items():
        assert entry["source"] in data["sources"], requirement_id
        assert entry["source_url"].startswith("https://"), requirement_id
        assert entry["checked_against"].startswith("20"), f"{requirement_id}: dated note"
        # Every passage between double quotes in a summary is the source's own wording.
        quoted = entry["summary"].split('"')[1::2]
        assert quoted, f"{requirement_id}: the summary quotes its source"
        for passage in quoted:
            assert passage.rstrip(".") in entry["quote"], f"{requirement_id}: {passage!r}"


@pytest.mark.slow
def test_each_requirement_lists_its_checks_findings_and_evidence(
    workspace: Path, tmp_path: Path
) -> None:
    cfg = str(workspace)
    before = run("report", "compliance", "--config", cfg)
    assert before.exit_code == 0, before.output
    for section in sections(before.stdout).values():
        assert "**no evidence**" in section
    assert not (workspace.parent / "hardenml.db").exists(), "read-only: not even a ledger file"

    assert run("gate", "--config", cfg).exit_code == 1
    folder = workspace.parent
    kept = snapshot(folder)
    shown = run("report", "compliance", "--config", cfg)
    assert shown.exit_code == 0, shown.output
    assert snapshot(folder) == kept, "read-only: nothing in the workspace changed"
    by_id = sections(shown.stdout)
    article = by_id["EU-AIA-15.5"]
    assert "Article 15(5)" in article and "no evidence**" not in article
    assert "`robust_accuracy[pgd-linf@0.1]`: **fail**" in article
    events = Ledger(folder / "hardenml.db").events()
    opened = next(
        e for e in events if e.kind == "finding.opened" and e.payload["threat"] == "pgd-linf"
    )
    assert opened.payload["finding_id"] in article and "AML.T0043.000" in article
    assert f"evidence `{opened.payload['evidence'][0]['path']}`" in article
    decided = next(e for e in events if e.kind == "gate.decided")
    assert f"#{decided.seq} `gate.decided`" in article
    assert "`clean_accuracy`: **pass**" in by_id["NIST-MEASURE-2.3"]
    assert "**no evidence**" in by_id["NIST-MEASURE-2.10"]

    out = tmp_path / "compliance.json"
    written = run("report", "compliance", "--config", cfg, "--json", "--output", str(out))
    assert written.exit_code == 0, written.output
    data = json.loads(out.read_text())
    flags = {r["id"]: r["has_evidence"] for r in data["requirements"]}
    assert flags == {"EU-AIA-15.5": True, "NIST-MEASURE-2.3": True, "NIST-MEASURE-2.10": False}
    assert data["ledger_events"] == len(events)


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ('id = "EU-AIA-99"', "requirements[0].id (line"),
        (
            'id = "EU-AIA-15.1"\nchecks = ["robust_accuracy[pgd-linf@0.5]"]',
            "requirements[0].checks[0] (line",
        ),
        ('id = "EU-AIA-15.1"\nthreats = ["fgsm"]', "requirements[0].threats[0] (line"),
    ],
)
def test_an_unknown_id_check_or_threat_is_a_usage_error(
    tmp_path: Path, digits_weights: Path, entry: str, key: str
) -> None:
    cfg = write_workspace(tmp_path / "ws", digits_weights)
    cfg.write_text(cfg.read_text() + f"\n[[requirements]]\n{entry}\n")
    refused = run("report", "compliance", "--config", str(cfg))
    assert refused.exit_code == 2
    assert key in refused.output, refused.output
