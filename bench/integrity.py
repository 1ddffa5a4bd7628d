"""Integrity benchmark: every evaluation-integrity check over the calibration zoo.

Run as `.venv/bin/python bench/integrity.py` (`--quick`: the test suite's smaller zoo,
digits and breast cancer only). `hardenml.integrity_zoo` trains the honest models and
wraps them in the masking defences, seeded; each is checked the way a scan checks it:
the model's own checks once (`check_model`), then each threat's (`check_threat`)
against the threat's outcome on the same samples, which the scan would have measured.

Threats, both L-inf at the model's budget (0.1 on 8x8 digits in [0, 1], 0.2 on MNIST in
[0, 1] and 51 on [0, 255], 0.25 on standardised breast-cancer features):
  pgd         LinfPGD with its defaults (20 steps), the threat `hardenml init` writes
  autoattack  AutoAttackEnsemble, reduced to fit the bench in minutes (APGD-CE 10 steps,
              APGD-T 10 steps x 3 targets, Square 300 queries): it exercises the checks of
              an ensemble (its convergence check strengthens APGD-T only)
Reported per check: false positives on the honest models (the aim: none) and catches on
the masked ones (the aim: every masked model caught by at least one check), with each
flagged result's words. Writes bench/results/integrity.json, prints the tables and
rewrites the recorded-run tables in bench/README.md between their markers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

# The bench's folder is on sys.path when a script in it runs: one machine description.
from attacks import machine

from hardenml.config import IntegrityConfig
from hardenml.integrity_zoo import BENCH, TEST, Bases, ZooModel, build, names
from hardenml.scan.integrity import (
    CHECKS,
    IntegrityResult,
    check_model,
    check_threat,
    gradient_health,
    seeded_model_randomness,
)
from hardenml.targets import Target
from hardenml.threats import Threat
from hardenml.threats.ensemble import AutoAttackEnsemble
from hardenml.threats.pgd import LinfPGD

RESULTS = Path(__file__).parent / "results" / "integrity.json"
README = Path(__file__).parent / "README.md"
BEGIN, END = "<!-- integrity tables: begin -->", "<!-- integrity tables: end -->"
# Steps of the shattered-gradient test (fractions of the input range) the bench reports,
# beside the check's own 1%.
STEPS = (0.001, 0.01, 0.03)
THREATS: dict[str, Threat] = {
    "pgd": LinfPGD(),
    "autoattack": AutoAttackEnsemble(steps=10, targets=3, square_queries=300),
}


def old_rule_share(target: Target, x: torch.Tensor, y: torch.Tensor, seed: int) -> float:
    """The shattered-gradient rule these checks replace: share of inputs whose cross-entropy
    gradients at x and at x + U(-1e-3, 1e-3) * range have cosine below 0.5."""
    lo, hi = target.input_spec.bounds
    noise = (torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1) * 1e-3

    def gradient(points: torch.Tensor) -> torch.Tensor:
        points = points.clone().requires_grad_(True)
        loss = F.cross_entropy(target.logits(points), y, reduction="sum")
        return torch.autograd.grad(loss, points)[0].flatten(1)

    g0, g1 = gradient(x), gradient((x + noise * (hi - lo)).clamp(lo, hi))
    broken = ~torch.isfinite(g0).all(dim=1) | (g0.abs().amax(dim=1) == 0)
    cosine = F.cosine_similarity(torch.nan_to_num(g0), torch.nan_to_num(g1), dim=1)
    return float((~broken & (cosine < 0.5)).double().mean())


def check(model: ZooModel, config: IntegrityConfig, seed: int) -> dict[str, Any]:
    """The scan's view of one zoo model: each threat's outcome, then every check."""
    target, x, y = model.target, model.x, model.y
    started = time.perf_counter()
    with torch.no_grad():
        clean = float((target.predict(x) == y).float().mean())
    outcome = {}
    threat_seconds = {}
    for name, threat in THREATS.items():
        began = time.perf_counter()
        result = threat(
            target, x, y, budget=model.budget, generator=torch.Generator().manual_seed(seed)
        )
        threat_seconds[name] = time.perf_counter() - began
        outcome[name] = result.robust_correct
    began = time.perf_counter()
    results: list[IntegrityResult] = check_model(
        target, x, y, config=config, seed=seed, blackbox="autoattack"
    )
    for name, threat in THREATS.items():
        results += check_threat(
            name, threat, target, x, y, model.budget, config=config, seed=seed, robust=outcome[name]
        )
    with seeded_model_randomness(seed, target.device):
        shattered = {
            f"{step:g}": gradient_health(target, x, y, step=step).shattered for step in STEPS
        }
        old_rule = old_rule_share(target, x, y, seed)
    return {
        "name": model.name,
        "masked": model.masked,
        "description": model.description,
        "budget": model.budget,
        "n": len(y),
        "clean_accuracy": clean,
        "robust_accuracy": {k: float(v.float().mean()) for k, v in outcome.items()},
        "threat_seconds": threat_seconds,
        "integrity_seconds": time.perf_counter() - began,
        "seconds": time.perf_counter() - started,
        "results": [r.as_dict() for r in results],
        "shattered_by_step": shattered,
        "old_cosine_rule_shattered": old_rule,
    }


def _caught_by(row: dict[str, Any]) -> list[str]:
    fired = {r["check"] for r in row["results"] if r["flagged"]}
    return [c for c in CHECKS if c in fired]


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    honest = [r for r in rows if not r["masked"]]
    masked = [r for r in rows if r["masked"]]
    per_check = {}
    for name in CHECKS:
        false_alarms = [r["name"] for r in honest if name in _caught_by(r)]
        catches = [r["name"] for r in masked if name in _caught_by(r)]
        per_check[name] = {
            "false_positive_rate": len(false_alarms) / max(len(honest), 1),
            "false_positives": false_alarms,
            "caught": catches,
        }
    missed = [r["name"] for r in masked if not _caught_by(r)]
    return {
        "honest_models": len(honest),
        "masked_models": len(masked),
        "per_check": per_check,
        "false_positive_models": sorted(
            {m for c in per_check.values() for m in c["false_positives"]}
        ),
        "missed_masked_models": missed,
        "aim_met": not missed and not any(c["false_positives"] for c in per_check.values()),
    }


def markdown(rows: list[dict[str, Any]], totals: dict[str, Any]) -> str:
    honest, masked = totals["honest_models"], totals["masked_models"]
    lines = [
        f"| check | false positives ({honest} honest) | caught ({masked} masked) |",
        "|---|---|---|",
    ]
    for name, row in totals["per_check"].items():
        fp = ", ".join(row["false_positives"]) or "none"
        caught = ", ".join(row["caught"]) or "-"
        lines.append(
            f"| `{name}` | {len(row['false_positives'])} ({row['false_positive_rate']:.0%}): "
            f"{fp} | {len(row['caught'])}: {caught} |"
        )
    lines += [
        "",
        "| model | kind | clean | pgd | autoattack | checks that fired | seconds (checks) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        fired = ", ".join(f"`{c}`" for c in _caught_by(row)) or "none"
        robust = row["robust_accuracy"]
        lines.append(
            f"| {row['name']} | {'masked' if row['masked'] else 'honest'} | "
            f"{row['clean_accuracy']:.2f} | {robust['pgd']:.2f} | {robust['autoattack']:.2f} | "
            f"{fired} | {row['seconds']:.0f} ({row['integrity_seconds']:.0f}) |"
        )
    lines += [
        "",
        "Shattered-gradient test: share of correctly classified inputs whose margin loss a "
        "signed step along its gradient does not raise, by step (fraction of the range), "
        "and the rule it replaces (cross-entropy gradient cosine < 0.5 at 1e-3 noise, share "
        "of all inputs).",
        "",
        "| model | " + " | ".join(f"step {s:g}" for s in STEPS) + " | old cosine rule |",
        "|---|" + "---|" * (len(STEPS) + 1),
    ]
    for row in rows:
        steps = " | ".join(f"{row['shattered_by_step'][f'{s:g}']:.2f}" for s in STEPS)
        lines.append(f"| {row['name']} | {steps} | {row['old_cosine_rule_shattered']:.2f} |")
    return "\n".join(lines)


def _update_readme(table: str, header: str) -> None:
    text = README.read_text()
    block = f"{BEGIN}\n{header}\n\n{table}\n{END}"
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    README.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the test suite's smaller zoo")
    parser.add_argument("--only", nargs="+", help="these zoo models only (no README update)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    size = TEST if args.quick else BENCH
    config = IntegrityConfig()
    bases = Bases(size, seed=args.seed)
    started = time.perf_counter()
    rows = []
    for name in args.only or names(size):
        began = time.perf_counter()
        model = build(name, bases)
        built = time.perf_counter() - began
        row = check(model, config, args.seed)
        row["build_seconds"] = built
        rows.append(row)
        fired = ", ".join(_caught_by(row)) or "nothing"
        print(
            f"{name:32s} {'masked' if model.masked else 'honest'}: {fired} ({row['seconds']:.0f}s)"
        )
    totals = summary(rows)
    wall = time.perf_counter() - started
    table = markdown(rows, totals)
    print()
    print(table)
    print(
        f"\naim met: {totals['aim_met']} (false positives on {totals['false_positive_models']}, "
        f"masked models missed: {totals['missed_masked_models']}); wall {wall:.0f}s"
    )
    report = {
        "zoo": "test" if args.quick else "bench",
        "size": vars(size),
        "seed": args.seed,
        "threats": {k: repr(v) for k, v in THREATS.items()},
        "config": config.model_dump(),
        "machine": machine(args.threads, load),
        "wall_seconds": wall,
        "summary": totals,
        "models": rows,
    }
    if not args.only:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")
        end = report["machine"]["load_average_at_end"]
        header = (
            f"Zoo `{report['zoo']}`, seed {args.seed}, {args.threads} torch thread(s), "
            f"wall {wall:.0f} s (zoo training included), load average {load[0]:.1f} at the "
            f"start and {end[0]:.1f} at the end."
        )
        _update_readme(table, header)


if __name__ == "__main__":
    main()
