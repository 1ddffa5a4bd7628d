"""Patch benchmark: no defence, PGD-AT, TRADES and the fast single-step methods side by side.

Run as `.venv/bin/python bench/patch.py` (add `--quick` for a smaller run; run the full
one in the background, it takes tens of minutes on two shared CPU cores). Model and
data: `hardenml.zoo.mnist_cnn` on mnist5k (4,000 training and 1,000 test images, pixels
in [0, 1]) at Madry et al.'s MNIST budget, L-inf 0.3.

- none: the CNN trained on clean images from scratch;
- pgd_at, trades, fgsm_rs: each fine-tuned from that clean model (the product's default,
  "from the released weights") with the same epochs, learning rate, seed and eps
  warm-up (the budget ramps up over the first epochs: 0.3 at once is too much for a
  clean model, and PGD-AT without it loses clean accuracy and learns little in the
  epochs a CPU affords), with the patches' early stopping on holdout PGD accuracy and,
  for FGSM-RS, the watch for catastrophic overfitting and its recovery;
- n_fgsm (de Jorge et al. 2022) and grad_align (Andriushchenko & Flammarion 2020): the
  single-step methods made for large budgets, fine-tuned from the same model, each with
  its own epochs and learning-rate schedule where the row says so (`FAST_SETTINGS`).
- atta (Zheng et al. 2020, ATTA): one step per batch from each training example's
  perturbation of the previous epoch, so the attack accumulates over the epochs.
- free_at (Shafahi et al. 2019, free AT, from ATTA's per-example memory): the training
  pass's own backward pass steps the perturbation; each batch is trained on twice.
  `FAST` (free_at, what `hardenml retrain` uses) is the one held to the aim: robust
  accuracy within 2 points of PGD-AT's in at most a third of its time.

`seconds` is each patch call's wall-clock time in this one process, one after another:
its training plus its own early-stopping checks on the holdout after every epoch (for
`none`, the clean training). The ratios to PGD-AT (`time_vs_pgd_at`,
`robust_pp_vs_pgd_at`, and for FAST `fast_vs_pgd_at_time`,
`fast_minus_pgd_at_robust_pp` in the meta) compare rows of the same run, so the load of
the machine inflates both sides alike.

Robust accuracy is measured on the test images under `AutoAttackEnsemble` (APGD-CE, then
APGD-T, then Square, each on what the previous left standing) with a reduced budget, or,
where that module is not importable, LinfPGD with 50 steps and restarts; the output says
which; every row is evaluated the same way. Writes bench/results/patch.json and prints a
table.
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
    # N-FGSM's own defaults: noise 2 eps, step eps, no clipping to the ball.
    "n_fgsm": ("n_fgsm", {}),
    "grad_align": ("grad_align", {}),
    # ATTA's carried perturbation, one step of eps / 2 per visit, from zero.
    "atta": ("atta", {}),
    # Free AT from the same carried perturbation: one backward pass serves the weights and
    # the perturbation's step of eps / 2, each batch replayed twice in a row.
    "free_at": ("free_at", {"replays": 2}),
}
# The fast method held to the aim (the one `hardenml retrain` uses by default).
FAST = "free_at"
# The learning rate of every row (Adam). 2e-3 and not the patches' default 1e-3: at 1e-3
# neither PGD-AT nor ATTA had converged in 10 epochs (on a 500-image PGD-20 proxy PGD-AT
# read 0.682 at 1e-3 and 0.788 at 2e-3), and a fast method compared at a rate the
# baseline was not given would be judged against a weakened baseline.
LR = 2e-3
# Its own epochs and schedule, (full run, quick run), where a fast method has them; its
# time, training and holdout checks together, is what the aim bounds. ATTA's epoch costs
# about a third of PGD-AT's (one gradient step per batch against ten, the same holdout
# checks), so 9 epochs against PGD-AT's 10 (the same 3 of warm-up) fit in a third of its
# time. Free AT's epoch (two full passes per batch) costs about 1.2x ATTA's: 8 fit (9
# took 0.39x, 7 missed the robustness by 0.4 points; bench/README.md).
FAST_SETTINGS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "atta": ({"epochs": 9}, {}),
    "free_at": ({"epochs": 8}, {}),
}
AIM_PP, AIM_TIME = -2.0, 1 / 3


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
        help="train only these defences (for tuning; the ratios need pgd_at in the same run)",
    )
    parser.add_argument(
        "--lr-schedule",
        choices=["flat", "cyclic"],
        default="flat",
        help="schedule of the defences without their own (cyclic: Wong et al.'s one cycle)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="the clean model's and every patch's training seed (the data split stays)",
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
    set_seed(args.seed)  # the initial weights come from the global generator
    module = train_classifier(mnist_cnn(), train.x, train.y, epochs=clean_epochs, seed=args.seed)
    seconds = time.perf_counter() - clock
    parent = TorchTarget(module, input_spec=spec, classes=CLASSES, device="cpu")
    results: dict[str, dict[str, Any]] = {}
    clean, robust = accuracies(parent, test, attack)
    results["none"] = {"clean_acc": clean, "robust_acc": robust, "seconds": round(seconds, 1)}
    console.print(f"none: {results['none']}")

    for name in args.only:
        patch_name, params = DEFENCES[name]
        shared = {"epochs": epochs, "warmup": warmup, "lr": LR, "lr_schedule": args.lr_schedule}
        own = FAST_SETTINGS.get(name, ({}, {}))[1 if args.quick else 0]
        patch = make_patch(patch_name, {"eps": EPS, **shared, **own, **params})
        clock = time.perf_counter()
        result = patch(parent, model, train, seed=args.seed)
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
        # Written after every row: a long run stopped early keeps what it measured.
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")

    results["meta"] = {
        "attack": attack_name,
        "eps": EPS,
        "norm": "linf",
        "n_train": len(train),
        "n_test": len(test),
        "epochs": epochs,
        "warmup": warmup,
        "lr": LR,
        "clean_epochs": clean_epochs,
        "seed": args.seed,
        "init": "finetune from the `none` model",
        "quick": args.quick,
        "aim": f"{FAST} within {-AIM_PP:g} points of pgd_at's robust accuracy in at most "
        "1/3 of its time (each patch call's wall-clock: training plus its holdout checks)",
        "fast_method": FAST,
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": args.threads,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "load_average_at_start": load,
            "load_average_at_end": os.getloadavg(),
        },
    }
    if "pgd_at" in results:
        slow = results["pgd_at"]
        for name in args.only:
            row = results[name]
            row["time_vs_pgd_at"] = round(row["seconds"] / slow["seconds"], 3)
            row["robust_pp_vs_pgd_at"] = round(100 * (row["robust_acc"] - slow["robust_acc"]), 1)
        if FAST in results:
            meta = results["meta"]
            meta["fast_vs_pgd_at_time"] = results[FAST]["time_vs_pgd_at"]
            meta["fast_minus_pgd_at_robust_pp"] = results[FAST]["robust_pp_vs_pgd_at"]
            meta["aim_met"] = (
                meta["fast_minus_pgd_at_robust_pp"] >= AIM_PP
                and meta["fast_vs_pgd_at_time"] <= AIM_TIME
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")

    table = Table(title=f"patches on the MNIST-5k CNN at L-inf {EPS} ({attack_name})")
    columns = ("defence", "epochs run", "clean acc", "robust acc", "seconds")
    for col in (*columns, "time vs pgd_at", "robust vs pgd_at (pp)"):
        table.add_column(col)
    for name in ("none", *args.only):
        r = results[name]
        table.add_row(
            name,
            str(r.get("epochs_run", clean_epochs)),
            f"{r['clean_acc']:.3f}",
            f"{r['robust_acc']:.3f}",
            f"{r['seconds']:.1f}",
            f"{r['time_vs_pgd_at']:.2f}x" if "time_vs_pgd_at" in r else "",
            f"{r['robust_pp_vs_pgd_at']:+.1f}" if "robust_pp_vs_pgd_at" in r else "",
        )
    console.print(table)
    meta = results["meta"]
    if "fast_vs_pgd_at_time" in meta:
        verdict = "met" if meta["aim_met"] else "NOT met"
        console.print(
            f"{FAST} vs pgd_at: {meta['fast_minus_pgd_at_robust_pp']:+.1f} points robust "
            f"accuracy in {meta['fast_vs_pgd_at_time']:.2f}x the time; aim (at least "
            f"{AIM_PP:+g} points in at most {AIM_TIME:.2f}x): {verdict}"
        )
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
