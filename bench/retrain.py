"""Retrain benchmark: robust accuracy on held-out threats before and after `hardenml
retrain`, and clean accuracy kept within the policy's margin.

Run as `.venv/bin/python bench/retrain.py` (`--quick`: 150 samples and 3 epochs instead
of 450 and 6). It builds a real workspace in a temporary folder: the digits MLP
(`hardenml.zoo.mlp`, 64 inputs, 32 hidden units, 15 clean epochs, seeded), a policy
that requires robustness to L-inf PGD at 0.1 (the threat the fine-tune trains on) and
declares three held-out
threats no patch or retrain ever trains on: Square (score-based, 300 queries), APGD-DLR
(a different loss, 50 steps) and the AutoAttack ensemble, each at L-inf 0.1. Then it
runs the loop as a user would, through the library behind the CLI (`hardenml.workflow`):

    scan -> release --force -> replay add -> retrain -> validate released <candidate>

and reads the validator's verdict: the paired clean-accuracy check against
`policy.clean_margin` (the lower end of the paired bootstrap interval of the difference
must stay above minus the margin) and each held-out threat's robust accuracy for the
released model and the candidate, with Wilson intervals on the validated samples. The
validator leaves out the evaluation rows the replay buffer's examples came from
(`replay_excluded`), so the numbers are on rows neither model was trained on.

Writes bench/results/retrain.json (retrain-quick.json with `--quick`) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from safetensors.torch import save_file

from hardenml import workflow
from hardenml.continuous import add_findings
from hardenml.data import load_source, split
from hardenml.stats import wilson_interval
from hardenml.train import train_classifier
from hardenml.zoo import mlp

RESULTS = Path(__file__).parent / "results"
HELD_OUT = ("square", "apgd-dlr", "autoattack")
CONFIG = """\
version = 1

[project]
name = "bench-retrain"

[model]
name = "digits-mlp"
kind = "pytorch"
factory = "hardenml.zoo:mlp"
path = "model.safetensors"
classes = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
device = "cpu"

[model.factory_kwargs]
in_features = 64
classes = 10
hidden = 32

[model.input]
shape = [64]
bounds = [0.0, 1.0]

[data]
source = "digits"
test_fraction = 0.25
seed = 0
max_samples = {max_samples}

[[threats]]
name = "pgd-linf"
attack = "pgd"
budgets = [0.1]
steps = 10

[[threats]]
name = "square"
attack = "square"
budgets = [0.1]
queries = 300
held_out = true

[[threats]]
name = "apgd-dlr"
attack = "apgd-dlr"
budgets = [0.1]
steps = 50
held_out = true

[[threats]]
name = "autoattack"
attack = "autoattack"
budgets = [0.1]
steps = 20
square_queries = 300
held_out = true

[policy]
clean_margin = 0.03
ece_margin = 0.05

[[policy.robust]]
threat = "pgd-linf"
budget = 0.1
min_accuracy = 0.7

[integrity]
enabled = false

[retrain]
l2sp = 0.01
epochs = {epochs}
"""


def build_workspace(folder: Path, *, quick: bool) -> Path:
    """The digits MLP trained on clean data, and the config beside it."""
    train, _ = split(load_source("digits"), test_fraction=0.25, seed=0)
    torch.manual_seed(0)
    model = train_classifier(mlp(64, 10, hidden=32), train.x, train.y, epochs=15, seed=0)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(folder / "model.safetensors"),
    )
    config = folder / "hardenml.toml"
    config.write_text(CONFIG.format(max_samples=150 if quick else 450, epochs=3 if quick else 6))
    return config


def accuracy(value: float, n: int, confidence: float) -> dict[str, Any]:
    """A validated accuracy with its Wilson interval over the `n` paired samples."""
    hits = round(value * n)
    low, high = wilson_interval(hits, n, confidence)
    return {"value": round(value, 4), "ci": [round(low, 4), round(high, 4)], "n": n}


def run(quick: bool) -> dict[str, Any]:
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="hardenml-bench-retrain-") as tmp:
        config_path = build_workspace(Path(tmp), quick=quick)
        ws = workflow.Workspace.open(config_path)

        def timed(stage: str, action: Any) -> Any:
            started = time.perf_counter()
            out = action()
            seconds[stage] = round(time.perf_counter() - started, 2)
            return out

        timed("scan", lambda: workflow.scan(ws, seed=0))
        workflow.release(ws, force=True)
        added = timed("replay_add", lambda: add_findings(ws.config, ws.ledger))
        replay_rows = 0 if added is None else added[0].record.size
        outcome = timed("retrain", lambda: workflow.retrain(ws, seed=0))
        candidate = outcome.artifact
        verdict = timed("validate", lambda: workflow.validate(ws, "released", candidate))
    n, confidence = verdict.n, verdict.confidence
    margin = ws.config.policy.clean_margin
    clean = next(c for c in verdict.checks if c.name.startswith("clean_accuracy"))
    held_out = {}
    for check in verdict.held_out:
        held_out[check.name] = {
            "before": accuracy(check.baseline, n, confidence),
            "after": accuracy(check.candidate, n, confidence),
            "difference": round(check.difference, 4),
            "paired_ci": [round(v, 4) for v in check.ci],
            "passed": check.passed,
        }
    trained_on = next(c for c in verdict.checks if c.name.startswith("robust_accuracy"))
    return {
        "quick": quick,
        "model": "digits MLP (64-32-10), 15 clean epochs",
        "data": "digits test split, less the rows the replay buffer's examples came from",
        "n": n,
        "confidence": confidence,
        "replay_rows": replay_rows,
        "replay_excluded": verdict.extra.get("replay_excluded"),
        "retrain": {
            k: outcome.event.payload["params"][k] for k in ("l2sp", "epochs", "eps", "adversary")
        },
        "clean": {
            "before": accuracy(clean.baseline, n, confidence),
            "after": accuracy(clean.candidate, n, confidence),
            # retrained minus released, as for the held-out checks (paired_ci is its interval)
            "difference": round(clean.candidate - clean.baseline, 4),
            "paired_ci": [round(v, 4) for v in clean.ci],
            "policy_clean_margin": margin,
            "within_margin": clean.ci[0] >= -margin,
            "passed": clean.passed,
        },
        "trained_threat": {
            "name": trained_on.name,
            "before": accuracy(trained_on.baseline, n, confidence),
            "after": accuracy(trained_on.candidate, n, confidence),
        },
        "held_out": held_out,
        "verdict_passed": verdict.passed,
        "seconds": seconds,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def show(result: dict[str, Any]) -> None:
    def fmt(acc: dict[str, Any]) -> str:
        return f"{acc['value']:.3f} [{acc['ci'][0]:.3f}, {acc['ci'][1]:.3f}]"

    table = Table(title=f"retrain: n={result['n']} validated samples")
    for col in ("check", "released", "retrained", "note"):
        table.add_column(col)
    c = result["clean"]
    table.add_row(
        "clean accuracy",
        fmt(c["before"]),
        fmt(c["after"]),
        f"{c['difference']:+.3f}, paired CI low {c['paired_ci'][0]:+.3f} vs margin "
        f"-{c['policy_clean_margin']:g}: {'within' if c['within_margin'] else 'OUTSIDE'}",
    )
    t = result["trained_threat"]
    table.add_row(escape(t["name"]) + " (trained on)", fmt(t["before"]), fmt(t["after"]), "")
    for name, h in result["held_out"].items():
        table.add_row(
            escape(name) + " (held out)",
            fmt(h["before"]),
            fmt(h["after"]),
            f"{h['difference']:+.3f} [{h['paired_ci'][0]:+.3f}, {h['paired_ci'][1]:+.3f}]",
        )
    console = Console(width=160)
    console.print(table)
    console.print(f"seconds: {result['seconds']}, load average {result['load_average']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="150 samples, 3 epochs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = run(args.quick)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("retrain-quick.json" if args.quick else "retrain.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    show(result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
