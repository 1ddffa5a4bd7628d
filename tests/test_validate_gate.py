"""The gate's use of the validator's verdict and of the last release in the ledger."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from hardenml.config import parse_config
from hardenml.gate.decision import decide, last_release, latest_validation
from hardenml.ledger import Ledger, RunRecord
from hardenml.records import ModelReleased

CONFIG = """
version = 1
[project]
name = "t"
[model]
name = "m"
kind = "sklearn"
path = "m.skops"
classes = ["a", "b"]
[model.input]
shape = [2]
[data]
source = "digits"
[[threats]]
name = "pgd-linf"
attack = "pgd"
budgets = [0.1]
[policy]
min_clean_accuracy = 0.8
max_regression = 0.02
{extra}
[[policy.robust]]
threat = "pgd-linf"
budget = 0.1
min_accuracy = 0.5
"""


def measurement(value: float, threat: str | None = None) -> dict[str, Any]:
    return {
        "metric": "clean_accuracy" if threat is None else "robust_accuracy",
        "threat": threat,
        "budget": None if threat is None else 0.1,
        "value": value,
        "ci_low": value - 0.03,
        "ci_high": value + 0.03,
        "confidence": 0.95,
        "n": 500,
        "seed": 0,
    }


def run(sha: str, clean: float, robust: float) -> RunRecord:
    payload = {
        "run_id": f"run-{sha}",
        "model": "m",
        "model_sha256": sha,
        "data_sha256": "d" * 64,
        "measurements": [measurement(clean), measurement(robust, "pgd-linf")],
    }
    return RunRecord(payload["run_id"], "m", sha, payload, 1)


def release(sha: str, clean: float, robust: float) -> ModelReleased:
    return ModelReleased(
        model="m",
        model_sha256=sha,
        path="m.pt",
        gate_seq=1,
        forced=False,
        data_sha256="d" * 64,
        measurements=[measurement(clean), measurement(robust, "pgd-linf")],
    )


def config(extra: str = "") -> Any:
    return parse_config(CONFIG.replace("{extra}", extra), root=Path("."))


def test_gate_passes_without_release_or_validation_and_fails_on_a_regression() -> None:
    cfg = config()
    assert decide(cfg, run("new", 0.95, 0.70), {}).passed
    released = release("old", 0.95, 0.75)
    # Within the policy but 5 points of robust accuracy below the released model.
    decision = decide(cfg, run("new", 0.95, 0.70), {}, released=released)
    assert not decision.passed
    failed = [c for c in decision.extra_checks if not c.passed]
    assert [c.name for c in failed] == ["regression[robust_accuracy[pgd-linf@0.1]]"]
    assert "0.700 vs 0.750" in failed[0].reason
    assert any(r.startswith("regression[robust_accuracy") for r in decision.reasons)
    # One point below is within max_regression; the released model itself never regresses.
    assert decide(cfg, run("new", 0.95, 0.74), {}, released=released).passed
    assert decide(cfg, run("old", 0.95, 0.70), {}, released=released).passed


def test_gate_follows_the_validators_verdict() -> None:
    cfg = config()
    failed = {
        "passed": False,
        "baseline_sha256": "b" * 64,
        "checks": [{"name": "calibration (ECE) not worse", "passed": False}],
    }
    decision = decide(cfg, run("new", 0.95, 0.70), {}, validation=failed)
    assert not decision.passed
    assert any("calibration (ECE) not worse" in r for r in decision.reasons)
    ok = {**failed, "passed": True}
    assert decide(cfg, run("new", 0.95, 0.70), {}, validation=ok).passed


def test_require_validation_after_a_release() -> None:
    cfg = config("require_validation = true")
    released = release("old", 0.95, 0.70)
    decision = decide(cfg, run("new", 0.95, 0.70), {}, released=released)
    assert not decision.passed and "no validation is recorded" in decision.reasons[0]
    assert decide(cfg, run("old", 0.95, 0.70), {}, released=released).passed


def test_ledger_lookups_find_the_latest_matching_event(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.db")
    ledger.append("validation.completed", {"candidate_sha256": "x", "passed": False})
    ledger.append("validation.completed", {"candidate_sha256": "y", "passed": True})
    ledger.append("validation.completed", {"candidate_sha256": "x", "passed": True})
    release = {"path": "m.pt", "gate_seq": 1, "forced": False}
    ledger.append("model.released", {"model": "m", "model_sha256": "x", **release})
    ledger.append("model.released", {"model": "other", "model_sha256": "z", **release})
    events = ledger.events()
    found = latest_validation(events, "x")
    assert found is not None and found["passed"] and found["ledger_seq"] == 3
    assert latest_validation(events, "nope") is None
    rel = last_release(events, "m")
    assert rel is not None and rel.model_sha256 == "x" and rel.ledger_seq == 4
    assert last_release(events, "unknown") is None


def test_scan_and_validate_share_one_evaluation_and_agree_exactly(
    tmp_path: Path, digits_weights: Path
) -> None:
    """Issue 11: the same model and threat gave 0.515 in the scan and 0.525 in validate,
    because each ran its own attack loop with other batches and seeds."""
    from tests.workspace import write_workspace

    from hardenml.workflow import Workspace, scan, validate

    config = write_workspace(tmp_path / "ws", digits_weights, max_samples=90)
    ws = Workspace.open(config)
    result = scan(ws)
    scanned = result.measurement("robust_accuracy[pgd-linf@0.1]")
    verdict = validate(ws, ws.model_path, ws.model_path)
    robust = [c for c in verdict.checks if "pgd-linf@0.1" in c.name]
    assert robust, [c.name for c in verdict.checks]
    assert robust[0].baseline == robust[0].candidate == scanned.value


def test_a_calibration_error_that_falls_is_no_regression_and_one_that_rises_is() -> None:
    """ECE and Brier are better when lower: the gate fails their rise past max_regression,
    never their fall (an improved ECE of 0.214 from 0.249 once failed as a "drop")."""
    cfg = config()

    def ece(value: float) -> dict[str, Any]:
        return {**measurement(value), "metric": "ece"}

    released = dataclasses.replace(release("old", 0.95, 0.70), measurements=[ece(0.249)])
    better = run("new", 0.95, 0.70)
    better.payload["measurements"].append(ece(0.214))
    assert decide(cfg, better, {}, released=released).passed
    worse = run("new", 0.95, 0.70)
    worse.payload["measurements"].append(ece(0.30))
    decision = decide(cfg, worse, {}, released=released)
    (failed,) = [c for c in decision.extra_checks if not c.passed]
    assert failed.name == "regression[ece]" and "allowed rise" in failed.reason
