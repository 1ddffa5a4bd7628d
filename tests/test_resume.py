"""An interrupted scan resumes from its checkpoints and ends with the same numbers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from hardenml import workflow
from hardenml.cli import app
from workspace import write_workspace

SLOW_SCAN = "\n[scan]\nbatch_size = 20\n"


def _slow_workspace(folder: Path, weights: Path) -> Path:
    config = write_workspace(folder, weights, min_robust=0.9, max_samples=300)
    text = config.read_text().replace("steps = 10", "steps = 100")
    config.write_text(text + SLOW_SCAN)
    return config


def test_sigkilled_scan_resumes_with_identical_numbers(tmp_path: Path, digits_weights: Path):
    config = _slow_workspace(tmp_path / "killed", digits_weights)
    checkpoints = tmp_path / "killed" / "artifacts" / "checkpoints"
    cmd = [
        sys.executable,
        "-c",
        "from hardenml.cli import main; main()",
        "scan",
        "--config",
        str(config),
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if len(list(checkpoints.glob("*/batch-*.npz"))) >= 3:
            break
        assert proc.poll() is None, "the scan finished before it could be interrupted"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len(list(checkpoints.glob("*/batch-*.npz")))
    assert 3 <= finished < 15

    resumed = CliRunner().invoke(app, ["scan", "--config", str(config)], catch_exceptions=False)
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming: {finished} of 15 batches already done" in resumed.output
    assert not list(checkpoints.glob("*/batch-*.npz")), "checkpoints are cleared once recorded"

    fresh_cfg = _slow_workspace(tmp_path / "fresh", digits_weights)
    uninterrupted = workflow.scan(workflow.Workspace.open(fresh_cfg))
    recorded = workflow.Workspace.open(config).ledger.events(["run.completed"])
    assert len(recorded) == 1  # the killed run wrote nothing to the ledger
    assert recorded[0].payload["scan"]["batches_resumed"] == finished
    assert recorded[0].payload["measurements"] == [m.as_dict() for m in uninterrupted.measurements]
    assert workflow.Workspace.open(config).ledger.verify().ok


def test_two_scans_at_once_keep_one_intact_chain(tmp_path: Path, digits_weights: Path):
    """Two `hardenml scan` processes on one ledger: both runs recorded, chain intact."""
    config = write_workspace(tmp_path / "ws", digits_weights, min_robust=0.9, max_samples=60)
    cmd = [
        sys.executable,
        "-c",
        "from hardenml.cli import main; main()",
        "scan",
        "--config",
        str(config),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        for _ in range(2)
    ]
    for proc in procs:
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr.decode()
    ledger = workflow.Workspace.open(config).ledger
    assert ledger.verify().ok
    runs = ledger.events(["run.completed"])
    assert len(runs) == 2 and runs[0].payload["run_id"] != runs[1].payload["run_id"]
    kinds = [e.kind for e in ledger.events()]
    # One finding, opened by whichever scan wrote first and observed by the other.
    assert kinds.count("finding.opened") == 1 and kinds.count("finding.observed") == 1
