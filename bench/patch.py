"""Patch benchmark: no defence, PGD-AT, TRADES and fast FGSM-RS side by side.

Run as `.venv/bin/python bench/patch.py` (add `--quick` for a smaller run; run the full
one in the background, it takes tens of minutes on two shared CPU cores). Model and
data: `hardenml.zoo.mnist_cnn` on mnist5k (4,000 training and 1,000 test images, pixels
in [0, 1]) at Madry et al.'s MNIST budget, L-inf 0.3.

- none: the CNN trained on clean images from scratch;
- pgd_at, trades, fgsm_rs, n_fgsm (FGSM-RS's single step with N-FGSM's noise): each
  fine-tuned from that clean model (the product's default,
  "from the released weights") with the same epochs, learning rate, seed and eps
  warm-up (the budget ramps up over the first epochs: 0.3 at once is too much for a
  clean model, and PGD-AT without it loses clean accuracy and learns little in the
  epochs a CPU affords), with the patches' early stopping on holdout PGD accuracy and,
  for FGSM-RS, the watch for catastrophic overfitting and its recovery. `seconds` is
  each one's own training time (for `none`, the clean training).

Robust accuracy is measured on the test images under `AutoAttackEnsemble` (APGD-CE, then
APGD-T, then Square, each on what the previous left standing) with a reduced budget, or,
where that module is not importable, LinfPGD with 50 steps and restarts; the output says
which. Writes bench/results/patch.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from hardenml.config import ModelConfig
from hardenml.data import Dataset, load_source, split
from hardenml.patch import make_patch
from hardenml.targets import InputSpec, Target, TorchTarget
from hardenml.threats import Threat
from hardenml.train import set_seed, train_classifier
from hardenml.zoo import mnist_cnn

RESULTS = Path(__file__).parent / "results" / "patch.json"
CLASSES = [str(i) for i in range(10)]
EPS = 0.3
# Row name -> (registered patch, its parameters beyond eps, epochs, warm-up and schedule).
DEFENCES: dict[str, tuple[str, dict[str, Any]]] = {
    "pgd_at": ("pgd_at", {"steps": 10}),
    "trades": ("trades", {"steps": 10, "beta": 6.0}),
    "fgsm_rs": ("fgsm_rs", {}),
    # N-FGSM (de Jorge et al. 2022): the same single step, from noise of twice the budget,
    # unclipped; it trades some accuracy at the budget for never overfitting to the step.
    "n_fgsm": ("fgsm_rs", {"noise": 2.0, "project": False, "step_size": EPS}),
}


def mnist_model_config() -> ModelConfig:
    """The `[model]` a patch needs for `hardenml.zoo.mnist_cnn` (bench/attacks.py too)."""
    return ModelConfig.model_validate(
        {
            "name": "mnist-cnn",
            "kind": "pytorch",
            "factory": "hardenml.zoo:mnist_cnn",
            "path": "unused.safetensors",
            "classes": CLASSES,
            "input": {"shape": [1, 28, 28]},
        }
    )


def evaluator(quick: bool) -> tuple[Threat, str]:
    """The robust-accuracy attack, and how to name it in the output."""
    try:
        from hardenml.threats.ensemble import AutoAttackEnsemble
    except ImportError:
        from hardenml.threats.pgd import LinfPGD

        restarts = 2 if quick else 3
        return LinfPGD(steps=50, restarts=restarts), f"LinfPGD(steps=50, restarts={restarts})"
    # AutoAttack's standard budget (100 steps, 9 targets, 5,000 queries) costs hours per
    # robust model on two CPU cores; this keeps its structure at a fraction of the cost.
    steps, targets, queries = (20, 2, 0) if quick else (50, 3, 1000)
    attack = AutoAttackEnsemble(steps=steps, targets=targets, square_queries=queries)
    return attack, f"AutoAttackEnsemble(steps={steps}, targets={targets}, square_queries={queries})"


def accuracies(
    target: Target, data: Dataset, attack: Threat, *, batch: int = 250
) -> tuple[float, float]:
    clean = robust = 0
    for b, start in enumerate(range(0, len(data), batch)):
        x = torch.from_numpy(data.x[start : start + batch])
        y = torch.from_numpy(data.y[start : start + batch])
        result = attack(target, x, y, budget=EPS, generator=torch.Generator().manual_seed(b))
        clean += int(result.clean_correct.sum())
        robust += int(result.robust_correct.sum())
    return clean / len(data), robust / len(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images, epochs and steps")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--only",
        choices=list(DEFENCES),
        nargs="+",
        default=list(DEFENCES),
        help="train only these defences (for tuning; the comparison needs all three)",
    )
    parser.add_argument(
        "--lr-schedule",
        choices=["flat", "cyclic"],
        default="flat",
        help="learning-rate schedule of every defence (cyclic: Wong et al.'s one cycle)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    load = os.getloadavg()

    train, test = split(load_source("mnist5k"), test_fraction=0.2, seed=0)
    if args.quick:
        rng = np.random.default_rng(0)
        train = train.take(np.sort(rng.choice(len(train), 1500, replace=False)))
        test = test.take(np.sort(rng.choice(len(test), 200, replace=False)))
    clean_epochs, epochs, warmup = (2, 3, 1) if args.quick else (5, 10, 3)
    spec = InputSpec(shape=(1, 28, 28))
    model = mnist_model_config()
    attack, attack_name = evaluator(args.quick)
    console.print(
        f"train {len(train)}, test {len(test)}, eps {EPS}, epochs {epochs} (warm-up {warmup}); "
        "robust accuracy "
        f"under {attack_name}; {args.threads} torch thread(s), load {load}"
    )

    clock = time.perf_counter()
    set_seed(0)  # the initial weights come from the global generator
    module = train_classifier(mnist_cnn(), train.x, train.y, epochs=clean_epochs, seed=0)
    seconds = time.perf_counter() - clock
    parent = TorchTarget(module, input_spec=spec, classes=CLASSES, device="cpu")
    results: dict[str, dict[str, Any]] = {}
    clean, robust = accuracies(parent, test, attack)
    results["none"] = {"clean_acc": clean, "robust_acc": robust, "seconds": round(seconds, 1)}
    console.print(f"none: {results['none']}")

    for name in args.only:
        patch_name, params = DEFENCES[name]
        patch = make_patch(
            patch_name,
            {
                "eps": EPS,
                "epochs": epochs,
                "warmup": warmup,
                "lr_schedule": args.lr_schedule,
                **params,
            },
        )
        clock = time.perf_counter()
        result = patch(parent, model, train, seed=0)
        seconds = time.perf_counter() - clock
        clean, robust = accuracies(result.target, test, attack)
        results[name] = {
            "clean_acc": clean,
            "robust_acc": robust,
            "seconds": round(seconds, 1),
            "params": patch.params(),
            "epochs_run": result.metrics["epochs_run"],
            "best_epoch": result.metrics["best_epoch"],
            "holdout": result.metrics["after"],
            "catastrophic_overfitting": result.events,
        }
        console.print(f"{name}: clean {clean:.3f}, robust {robust:.3f}, {seconds:.1f}s")

    results["meta"] = {
        "attack": attack_name,
        "eps": EPS,
        "norm": "linf",
        "n_train": len(train),
        "n_test": len(test),
        "epochs": epochs,
        "warmup": warmup,
        "clean_epochs": clean_epochs,
        "init": "finetune from the `none` model",
        "quick": args.quick,
        "aim": "fgsm_rs within 2 points of pgd_at's robust accuracy in under 1/3 of its time",
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": args.threads,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "load_average_at_start": load,
        },
    }
    if "fgsm_rs" in results and "pgd_at" in results:
        fast, slow = results["fgsm_rs"], results["pgd_at"]
        results["meta"]["fgsm_rs_minus_pgd_at_robust_pp"] = round(
            100 * (fast["robust_acc"] - slow["robust_acc"]), 1
        )
        results["meta"]["fgsm_rs_over_pgd_at_time"] = round(fast["seconds"] / slow["seconds"], 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")

    table = Table(title=f"patches on the MNIST-5k CNN at L-inf {EPS} ({attack_name})")
    for col in ("defence", "clean acc", "robust acc", "seconds"):
        table.add_column(col)
    for name in ("none", *args.only):
        r = results[name]
        table.add_row(
            name, f"{r['clean_acc']:.3f}", f"{r['robust_acc']:.3f}", f"{r['seconds']:.1f}"
        )
    console.print(table)
    if "fgsm_rs_over_pgd_at_time" not in results["meta"]:
        console.print(f"wrote {args.out}")
        return
    console.print(
        f"FGSM-RS vs PGD-AT: {results['meta']['fgsm_rs_minus_pgd_at_robust_pp']:+.1f} points "
        f"robust accuracy in {results['meta']['fgsm_rs_over_pgd_at_time']:.2f}x the time; "
        f"wrote {args.out}"
    )


if __name__ == "__main__":
    main()
