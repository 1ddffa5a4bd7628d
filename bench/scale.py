"""Scale-out benchmark: the same scan on the local executor and on Dask with 1 and 2 workers.

Run as `.venv/bin/python bench/scale.py` (add `--quick` for fewer samples). Model and
data: `hardenml.zoo.mnist_cnn` trained (seeded) for one epoch on the mnist5k training
split, scanned on the first `--samples` of its held-out split with 20-step L-inf PGD at
0.1 and 0.2, in batches (shards) of `--batch-size`; integrity checks off, so the time is
the sharded part plus the scan's own bookkeeping. Every executor scans the same
workspace from its hardenml.toml, as `hardenml scan --executor ...` does.

Times are wall-clock seconds of `workflow.scan` alone; starting the local cluster
(`cluster_start_s`) is reported apart, because a real cluster is started once for many
scans. Each cluster runs the scan twice: `dask_N_cold_s` is the first, in which every
worker opens the workspace (model, data, threats) on its first shard; `dask_N_s` the
second, on workers that hold it already, as a long-lived cluster runs most scans. Each
shard's own compute time comes back with its arrays (`seconds` of the scan), which gives
the per-shard cost, the overhead per task (what a shard costs on one warm Dask worker
beyond its compute: sending, scheduling, the per-shard randomness probe) and a
projection for N workers: driver time + ceil(shards / N) x (shard cost + overhead per
task). Torch runs one
intra-op thread everywhere (Dask's workers default to OMP_NUM_THREADS=1; the local scan
is set to match), so the comparison is one core per worker. Writes
bench/results/scale.json and prints a table; `same_numbers` is true when every scan (local,
and cold and warm on 1 and 2 workers) recorded identical measurements.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from safetensors.torch import save_file

from hardenml import workflow
from hardenml.data import load_source, split
from hardenml.executors import DaskExecutor
from hardenml.scan import ScanResult
from hardenml.train import set_seed, train_classifier
from hardenml.zoo import mnist_cnn

RESULTS = Path(__file__).parent / "results" / "scale.json"
CONFIG = """\
version = 1

[project]
name = "scale-bench"

[model]
name = "mnist-cnn"
kind = "pytorch"
factory = "hardenml.zoo:mnist_cnn"
path = "model.safetensors"
classes = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
device = "cpu"

[model.input]
shape = [1, 28, 28]
bounds = [0.0, 1.0]

[data]
source = "mnist5k"
test_fraction = 0.2
seed = 0
max_samples = {samples}

[scan]
batch_size = {batch_size}

[[threats]]
name = "pgd-linf"
attack = "pgd"
budgets = [0.1, 0.2]
steps = 20

[policy]
min_clean_accuracy = 0.5

[integrity]
enabled = false
"""
PROJECT_WORKERS = (4, 8, 16, 32)


def _workspace(folder: Path, samples: int, batch_size: int) -> Path:
    train, _ = split(load_source("mnist5k"), test_fraction=0.2, seed=0)
    set_seed(0)  # the initial weights come from the global generator
    module = train_classifier(mnist_cnn(), train.x, train.y, epochs=1, seed=0)
    save_file(
        {k: v.contiguous() for k, v in module.state_dict().items()}, folder / "model.safetensors"
    )
    config = folder / "hardenml.toml"
    config.write_text(CONFIG.format(samples=samples, batch_size=batch_size))
    return config


def _timed_scan(config: Path, executor: DaskExecutor | None) -> tuple[float, ScanResult]:
    ws = workflow.Workspace.open(config)
    started = time.perf_counter()
    result = workflow.scan(ws, executor=executor)
    return time.perf_counter() - started, result


def _shard_seconds(result: ScanResult) -> float:
    """Compute time summed over shards, as the shards measured it themselves."""
    return float(result.seconds["clean"] + sum(result.seconds["units"].values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="160 samples instead of 400")
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=20)
    args = parser.parse_args()
    samples = args.samples or (160 if args.quick else 400)
    torch.set_num_threads(1)
    console = Console()
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmp:
        config = _workspace(Path(tmp), samples, args.batch_size)
        local_s, local = _timed_scan(config, None)
        runs: dict[int, dict[str, Any]] = {}
        for workers in (1, 2):
            started = time.perf_counter()
            with DaskExecutor(workers=workers) as executor:
                cluster_start_s = time.perf_counter() - started
                # Cold: each worker opens the workspace on its first shard. Warm: the same
                # scan again on the same cluster, as a long-lived cluster runs most scans.
                cold_s, cold = _timed_scan(config, executor)
                seconds, result = _timed_scan(config, executor)
            runs[workers] = {
                "s": seconds,
                "cold_s": cold_s,
                "cluster_start_s": cluster_start_s,
                "result": result,
                "cold": cold,
            }

    shards = local.batches_total
    shard_s = _shard_seconds(local) / shards
    driver_s = max(0.0, local_s - _shard_seconds(local))
    dask_1_s, dask_2_s = runs[1]["s"], runs[2]["s"]
    overhead_s = max(0.0, (dask_1_s - local_s) / shards)
    same = all(
        [m.as_dict() for m in run[which].measurements] == [m.as_dict() for m in local.measurements]
        for run in runs.values()
        for which in ("result", "cold")
    )
    projection = {
        str(n): round(driver_s + math.ceil(shards / n) * (shard_s + overhead_s), 2)
        for n in PROJECT_WORKERS
    }
    out = {
        "local_s": round(local_s, 2),
        "dask_1_s": round(dask_1_s, 2),
        "dask_2_s": round(dask_2_s, 2),
        "same_numbers": same,
        "dask_2_over_dask_1": round(dask_2_s / dask_1_s, 3),
        "dask_2_over_local": round(dask_2_s / local_s, 3),
        "dask_1_cold_s": round(runs[1]["cold_s"], 2),
        "dask_2_cold_s": round(runs[2]["cold_s"], 2),
        "cluster_start_s": {str(k): round(v["cluster_start_s"], 2) for k, v in runs.items()},
        "shards": shards,
        "samples": local.n,
        "shard_compute_s": round(shard_s, 3),
        "driver_s": round(driver_s, 2),
        "overhead_per_task_s": round(overhead_s, 3),
        "projected_s": projection,
        "measurements": {m.key: m.value for m in local.measurements},
        "settings": {
            "model": "hardenml.zoo.mnist_cnn, 1 epoch on mnist5k train (seed 0)",
            "threat": "pgd linf, 20 steps, budgets 0.1 and 0.2",
            "batch_size": args.batch_size,
            "torch_threads": 1,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")

    table = Table(title=f"one scan, {local.n} samples in {shards} shards")
    for col in ("executor", "seconds (warm)", "vs local", "cold (first scan)", "cluster start"):
        table.add_column(col)
    table.add_row("local", f"{local_s:.1f}", "1.00", "-", "-")
    for workers, run in runs.items():
        table.add_row(
            f"dask, {workers} worker{'s' if workers > 1 else ''}",
            f"{run['s']:.1f}",
            f"{run['s'] / local_s:.2f}",
            f"{run['cold_s']:.1f}",
            f"{run['cluster_start_s']:.1f}",
        )
    console.print(table)
    console.print(
        f"2 workers / 1 worker: {dask_2_s / dask_1_s:.2f} (aim <= 0.8); same numbers: {same}; "
        f"per shard {shard_s:.2f}s compute + {overhead_s:.2f}s overhead; projected "
        + ", ".join(f"{n} workers {s}s" for n, s in projection.items())
        + f"; load average {out['machine']['load_average_before']} -> "
        f"{out['machine']['load_average_after']}"
    )
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
