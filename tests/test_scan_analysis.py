"""What a scan measures beyond accuracy: calibration, slices, data checks, evidence."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from hardenml import workflow
from hardenml.ledger import findings_state
from hardenml.scan.calibration import expected_calibration_error
from workspace import write_workspace

SLICES = """
[[slices]]
name = "digit"
kind = "class"
"""
SLICE_OWNER = '"slice:digit" = "data-team"\n"pgd-linf" = "robustness-team"'


def test_calibration_measured_clean_and_under_each_threat(tmp_path: Path, digits_weights: Path):
    config = write_workspace(tmp_path / "ws", digits_weights, max_samples=200)
    ws = workflow.Workspace.open(config)
    result = workflow.scan(ws)
    keys = {m.key for m in result.measurements}
    assert {"ece", "brier", "ece[pgd-linf@0.1]", "brier[pgd-linf@0.02]"} <= keys
    ece = result.measurement("ece")
    probs, y = result.outcomes["clean_probs"], result.outcomes["y"]
    assert ece.value == expected_calibration_error(probs, y)
    assert ece.ci_low <= ece.value + 0.02 and ece.n == 200
    adv_ece = result.measurement("ece[pgd-linf@0.1]")
    adv_probs = result.outcomes["adv_probs/pgd-linf@0.1"]
    assert adv_ece.value == expected_calibration_error(adv_probs, y)
    run = ws.ledger.events(["run.completed"])[-1].payload
    assert set(run["calibration"]) == {"clean", "pgd-linf@0.02", "pgd-linf@0.1"}
    assert sum(b["count"] for b in run["calibration"]["clean"]["bins"]) == 200
    assert run["calibration"]["pgd-linf@0.1"]["accuracy"] < run["calibration"]["clean"]["accuracy"]
    checks = run["data_checks"]
    assert checks["leakage"]["exact_count"] == 0
    assert "shift" in checks and "label_balance" in checks


def test_slice_gaps_open_and_fix_findings(tmp_path: Path, digits_weights: Path):
    config = write_workspace(tmp_path / "ws", digits_weights, min_robust=0.0, max_samples=450)
    strict = (
        config.read_text()
        .replace("[policy]", "[policy]\nslice_tolerance = 0.0")
        .replace('"pgd-linf" = "robustness-team"', SLICE_OWNER)
        + SLICES
    )
    config.write_text(strict)
    ws = workflow.Workspace.open(config)
    result = workflow.scan(ws)
    flagged = [f for f in result.findings if f.metric == "slice_gap"]
    assert flagged, "some digit is confidently worse than the rest under attack"
    gaps = {(g["outcome"], g["name"]): g for g in result.analysis["slices"]}
    for finding in flagged:
        outcome = "clean" if finding.threat is None else f"{finding.threat}@{finding.budget:g}"
        gap = gaps[(outcome, finding.slice)]
        assert gap["flagged"] and gap["gap_ci"][0] > 0.0
        assert finding.owner == "data-team"  # slice owners come before threat owners
        assert len({f.fingerprint for f in flagged}) == len(flagged)
    # With a tolerance nothing can exceed, the next scan marks them fixed.
    config.write_text(strict.replace("slice_tolerance = 0.0", "slice_tolerance = 1.0"))
    ws = workflow.Workspace.open(config)
    workflow.scan(ws)
    state = findings_state(ws.ledger.events())
    assert all(state[f.finding_id].status == "fixed" for f in flagged)


def test_evidence_holds_real_adversarial_examples(tmp_path: Path, digits_weights: Path):
    config = write_workspace(tmp_path / "ws", digits_weights, max_samples=120)
    # Read the digits as 1x8x8 images (the MLP flattens them): evidence gets thumbnails.
    config.write_text(config.read_text().replace("shape = [64]", "shape = [1, 8, 8]"))
    ws = workflow.Workspace.open(config)
    result = workflow.scan(ws)
    (finding,) = [f for f in result.findings if f.metric == "robust_accuracy"]
    evidence, *thumbnails = finding.evidence
    assert evidence["kind"] == "adversarial_examples"
    assert 0 < len(thumbnails) <= 8
    for thumb in thumbnails:
        blob = (tmp_path / "ws" / thumb["path"]).read_bytes()
        assert blob.startswith(b"\x89PNG\r\n\x1a\n") and thumb["kind"] == "thumbnail"
        assert hashlib.sha256(blob).hexdigest() == thumb["sha256"]
    with np.load(tmp_path / "ws" / evidence["path"]) as arrays:
        x, x_adv, y, pred = arrays["x"], arrays["x_adv"], arrays["y"], arrays["pred"]
    assert len(y) == evidence["count"] > 0
    assert np.abs(x_adv - x).max() <= 0.1 + 1e-6
    assert (pred != y).all()
    target = ws.load_target()
    import torch

    assert (target.predict(torch.from_numpy(x_adv)).numpy() == pred).all()
    assert json.dumps(finding.as_dict())  # the record serialises as it flows to the ledger


def test_split_all_skips_the_leakage_check_instead_of_reporting_itself(
    tmp_path: Path, digits_weights: Path
) -> None:
    """Issue 11: with data.split = "all" the checks built a train split and reported 80%
    of the evaluated rows as exact duplicates of it."""
    from hardenml.workflow import Workspace, scan

    config = write_workspace(tmp_path / "ws", digits_weights, max_samples=60)
    config.write_text(config.read_text().replace("seed = 0\n", 'seed = 0\nsplit = "all"\n', 1))
    result = scan(Workspace.open(config))
    checks = result.analysis["data_checks"]
    assert "leakage" not in checks and "split = 'all'" in checks["skipped"]
