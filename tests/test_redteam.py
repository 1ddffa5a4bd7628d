"""`hardenml redteam` on the digits MLP: every registered threat that applies, at every
budget of its space, with drawn effort; new findings on the first run, nothing new on the
next, findings the scan already opened never repeated, budgets never past the threat
model, a time budget that stops cleanly, and config errors that exit 2."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
from tests.workspace import digits_workspace
from typer.testing import CliRunner

from hardenml.cli import app
from hardenml.continuous.redteam import draw_effort
from hardenml.ledger import Ledger, findings_state
from hardenml.threats.registry import available_threats, threat_class
from workspace import digits_head

runner = CliRunner()

SKIPPED = ["apgd-ce", "apgd-dlr", "autoattack", "hopskipjump", "minimal", "art"]

# Declared: PGD at 0.05 only; the threat model reaches 0.1 through the FGSM entry, so the
# red team runs PGD (and Square, and FGSM) at 0.1 too, where the scan never ran PGD.
CONFIG = (
    digits_head("redteam", max_samples=60)
    + f"""

[[threats]]
name = "pgd-linf"
attack = "pgd"
budgets = [0.05]
steps = 5

[[threats]]
name = "fgsm-linf"
attack = "fgsm"
budgets = [0.1]

[[policy.robust]]
threat = "fgsm-linf"
budget = 0.1
min_accuracy = 0.95

[integrity]
enabled = false

[redteam]
effort = 2.0
trials = 2
skip = {json.dumps(SKIPPED)}
"""
)


@pytest.fixture
def workspace(tmp_path: Path, digits_weights: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    # Square's default 1000 queries, doubled at most: a few seconds on 60 samples.
    return digits_workspace(tmp_path, digits_weights, CONFIG)


def redteam(*args: str) -> tuple[int, dict]:
    result = runner.invoke(app, ["redteam", "--json", *args], catch_exceptions=False)
    return result.exit_code, json.loads(result.stdout)


def test_every_effort_parameter_is_a_whole_number_keyword_of_its_threat() -> None:
    for name in available_threats():
        cls = threat_class(name)
        params = inspect.signature(cls.__init__).parameters
        for effort in cls.effort:
            assert params[effort].kind is inspect.Parameter.KEYWORD_ONLY, (name, effort)
            assert isinstance(params[effort].default, int), (name, effort)


def test_drawn_effort_stays_between_the_configured_value_and_its_multiple() -> None:
    pgd = threat_class("pgd")
    rng = np.random.default_rng(0)
    draws = [draw_effort(pgd, {"steps": 10}, effort=3.0, rng=rng) for _ in range(200)]
    steps = [d["steps"] for d in draws]
    restarts = [d["restarts"] for d in draws]
    assert min(steps) == 10 and max(steps) == 30
    assert set(restarts) == {1, 2, 3}
    assert draw_effort(pgd, {"steps": 10}, effort=1.0, rng=rng) == {"steps": 10, "restarts": 1}


@pytest.mark.slow
def test_new_findings_first_then_nothing_new_and_never_past_the_threat_model(
    workspace: Path,
) -> None:
    code, first = redteam("--seed", "3", "--out", "rt.json")
    assert code == 1, first
    assert json.loads((workspace / "rt.json").read_text())["run_id"] == first["run_id"]
    assert first["stop_reason"] == "complete" and not first["not_covered"]
    attacks = {u["attack"] for u in first["units"]}
    assert attacks == {"fgsm", "pgd", "square"}, first["skipped"]
    assert "l2" in first["skipped"]["pgd-l2"] and "listed in" in first["skipped"]["art"]
    for unit in first["units"]:
        # Every budget is one the threat model declares in the unit's space, none beyond.
        assert unit["space"] == "linf" and unit["budget"] in (0.05, 0.1), unit
        assert len(unit["params"]) == 2  # two trials, each drawn
        for drawn in unit["params"]:
            if unit["attack"] == "pgd":
                assert 5 <= drawn["steps"] <= 10 and 1 <= drawn["restarts"] <= 2
            if unit["attack"] == "square":
                assert 1000 <= drawn["queries"] <= 2000
    pgd_far = next(u for u in first["units"] if u["attack"] == "pgd" and u["budget"] == 0.1)
    assert pgd_far["requirement"] == "robust_accuracy[fgsm-linf@0.1]"
    assert pgd_far["passed"] is False and pgd_far["finding_id"]
    lo, hi = pgd_far["ci"]
    assert lo <= pgd_far["value"] <= hi and pgd_far["n"] == first["n"] == 60
    new_ids = {f["finding_id"] for f in first["new_findings"]}
    assert pgd_far["finding_id"] in new_ids

    ledger = Ledger(workspace / "hardenml.db")
    state = findings_state(ledger.events())
    assert new_ids <= set(state)
    finding = state[pgd_far["finding_id"]]
    assert finding.threat == "redteam-pgd" and finding.budget == 0.1
    assert finding.evidence and (workspace / finding.evidence[0]["path"]).is_file()
    event = ledger.events(["redteam.completed"])[-1].payload
    assert sorted(event["new_findings"]) == sorted(new_ids)

    code, second = redteam("--seed", "3")
    assert code == 0, second
    assert second["new_findings"] == [] and set(second["known_findings"]) == new_ids
    assert second["units"] == first["units"]  # the same seed, the same numbers
    # Another seed draws other parameters; the same vulnerabilities are still not new.
    code, third = redteam("--seed", "4")
    assert third["new_findings"] == [] and code == 0
    assert len(ledger.events(["finding.opened"])) == len(new_ids)


@pytest.mark.slow
def test_a_finding_the_scan_already_opened_is_not_repeated(workspace: Path) -> None:
    text = CONFIG.replace("budgets = [0.05]\nsteps = 5", "budgets = [0.05, 0.1]\nsteps = 5")
    text += '\n[[policy.robust]]\nthreat = "pgd-linf"\nbudget = 0.1\nmin_accuracy = 0.95\n'
    (workspace / "hardenml.toml").write_text(text)
    scanned = runner.invoke(app, ["scan"], catch_exceptions=False)
    assert scanned.exit_code == 0, scanned.output
    scan_ids = set(findings_state(Ledger(workspace / "hardenml.db").events()))
    code, report = redteam()
    assert code == 1
    new = {f["threat"] for f in report["new_findings"] if f["budget"] == 0.1}
    # PGD and FGSM at 0.1 are what the scan found already; Square at 0.1 is new (and so
    # is every attack at 0.05, where the scan judged nothing).
    assert "redteam-square" in new and not new & {"redteam-pgd", "redteam-fgsm"}, new
    assert scan_ids & set(report["known_findings"])


def test_a_time_budget_stops_cleanly_and_says_what_was_left(workspace: Path) -> None:
    code, report = redteam("--time-budget", "0")
    assert code == 0 and report["stop_reason"] == "time budget"
    assert report["units"] == [] and len(report["not_covered"]) == 6
    assert "pgd@0.1" in report["not_covered"] and report["time_budget_s"] == 0
    event = Ledger(workspace / "hardenml.db").events(["redteam.completed"])[-1].payload
    assert event["stop_reason"] == "time budget" and event["not_covered"] == report["not_covered"]


def test_a_partial_time_budget_covers_a_prefix_and_stops_within_a_batch(workspace: Path) -> None:
    text = CONFIG.replace("skip = ", "max_seconds = 1.0\nskip = ")
    (workspace / "hardenml.toml").write_text(text.replace("max_samples = 60", "max_samples = 400"))
    code, report = redteam()
    assert report["stop_reason"] == "time budget", report["units"]
    assert report["not_covered"] and report["seconds"] < 20
    # What was covered was covered whole: every sample of the plan.
    assert all(u["n"] == 400 for u in report["units"])
    assert code == (1 if report["new_findings"] else 0)


@pytest.mark.parametrize(
    ("section", "named"),
    [
        ("[redteam]\neffort = 0.5\n", "redteam.effort"),
        ('[redteam]\nskip = ["pgd-typo"]\n', "redteam.skip[0]"),
        ("[redteam]\nrestarts = 3\n", "redteam.restarts"),
    ],
)
def test_a_bad_redteam_section_exits_2_naming_the_key(
    workspace: Path, section: str, named: str
) -> None:
    head, _, _ = CONFIG.partition("[redteam]")
    (workspace / "hardenml.toml").write_text(head + section)
    result = runner.invoke(app, ["redteam"])
    assert result.exit_code == 2, result.output
    assert named in result.output
