"""Run the declared threats over the evaluation data and measure what they find.

The scan walks the evaluation set in seeded random order, one batch at a time, and runs
every threat and budget on each batch. Each finished batch is checkpointed atomically,
so an interrupted scan resumes where it stopped and ends with the same numbers. With
`scan.sequential`, it stops as soon as every gated metric is settled (see
`hardenml.scan.sequential`); `max_samples` and `max_seconds` cap the work either way.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hardenml._progress import Progress, SilentProgress
from hardenml.config import HardenConfig
from hardenml.data import Dataset
from hardenml.imaging import delta_pixels, png_bytes, to_pixels, upscale
from hardenml.records import WORST_CASE_METRIC, Finding, Measurement, UnitKey, finding_id_for
from hardenml.scan.analysis import analyse
from hardenml.scan.behaviour import SuiteResult, preflight, run_suites
from hardenml.scan.evaluation import attack_batch, batch_plan, clean_probabilities
from hardenml.scan.explain import explain_evidence, require_explainer
from hardenml.scan.integrity import (
    IntegrityResult,
    by_check,
    check_model,
    check_threat,
    has_blackbox_stage,
)
from hardenml.scan.metrics import proportion
from hardenml.scan.policy import (
    PolicyCheck,
    Remedy,
    checks_for,
    finding_for,
    integrity_finding,
    slice_finding,
)
from hardenml.scan.shards import SHARD_QUERIES, BatchArrays, BatchRunner, BatchShard
from hardenml.scan.stochastic import StochasticCheck, stochastic_view
from hardenml.scan.threat_models import SharedThreatModel, shared_threat_models, worst_case
from hardenml.stats import derive_seed
from hardenml.targets import Target
from hardenml.targets.text_codec import decode_texts
from hardenml.threats import Threat, check_access

EVIDENCE_PER_THREAT = 32
THUMBNAILS = 8


@dataclass
class ScanResult:
    run_id: str
    model: str
    model_sha256: str
    data_sha256: str
    seed: int
    n: int
    measurements: list[Measurement]
    checks: list[PolicyCheck]
    findings: list[Finding]
    started: str
    finished: str
    data_provenance: dict[str, Any] = field(default_factory=dict)
    scan_fingerprint: str = ""
    sequential: bool = False
    n_available: int = 0
    n_max: int = 0
    batches_done: int = 0
    batches_total: int = 0
    batches_resumed: int = 0
    stop_reason: str = "complete"
    # Inputs this run sent to the model (`Target.queries`): what a metered or rate-limited
    # endpoint was charged. Batches resumed from a checkpoint cost none.
    queries: int = 0
    # Per-sample outcomes, for calibration and reports: "clean_probs",
    # "adv_probs/<unit>", "robust/<unit>", "y".
    outcomes: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    # Calibration, margins, slices, corruption rates (see `hardenml.scan.analysis`).
    analysis: dict[str, Any] = field(default_factory=dict, repr=False)
    # Findings this scan checked and found holding: id -> measured value (they get fixed).
    passed_ids: dict[str, float] = field(default_factory=dict)
    # Whether the model's outputs change between calls, and the rule it was evaluated under.
    stochastic: StochasticCheck | None = None
    # Threat models more than one threat attacked: the policy judges those on the worst case.
    threat_models: list[SharedThreatModel] = field(default_factory=list)
    # Wall-clock seconds by piece of work (`ScanTimings.as_dict`), for JUnit's `time`.
    seconds: dict[str, Any] = field(default_factory=dict)

    def measurement(self, key: str) -> Measurement:
        return next(m for m in self.measurements if m.key == key)

    def scan_summary(self) -> dict[str, Any]:
        return {
            "sequential": self.sequential,
            "n_used": self.n,
            "n_available": self.n_available,
            "n_max": self.n_max,
            "batches_done": self.batches_done,
            "batches_total": self.batches_total,
            "batches_resumed": self.batches_resumed,
            "stop_reason": self.stop_reason,
            "queries": self.queries,
            "threat_models": [model.as_dict() for model in self.threat_models],
            "seconds": self.seconds,
        }


# Batch arrays that hold how long the batch took, not per-sample outcomes: checkpointed with
# the batch (a resumed scan still knows the time it spent), kept out of the outcomes.
SECONDS_PREFIX = "seconds/"
CLEAN_SECONDS = f"{SECONDS_PREFIX}clean"


@dataclass
class ScanTimings:
    """Where a scan spent its time: the clean forward passes, each threat at each budget
    (summed over batches, including batches a resumed scan read from its checkpoint), each
    behavioural suite, each threat's integrity checks and the analysis."""

    clean: float = 0.0
    units: dict[str, float] = field(default_factory=dict)
    behaviour: dict[str, float] = field(default_factory=dict)
    integrity: dict[str, float] = field(default_factory=dict)
    analysis: float = 0.0

    def add_batch(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Count a batch's timing arrays and return the batch without them."""
        outcomes = {}
        for key, value in arrays.items():
            if not key.startswith(SECONDS_PREFIX):
                outcomes[key] = value
            elif key == CLEAN_SECONDS:
                self.clean += float(value.sum())
            else:
                unit = key.removeprefix(SECONDS_PREFIX)
                self.units[unit] = self.units.get(unit, 0.0) + float(value.sum())
        return outcomes

    def as_dict(self) -> dict[str, Any]:
        def r(x: float) -> float:
            return round(x, 3)

        return {
            "clean": r(self.clean),
            "units": {k: r(v) for k, v in self.units.items()},
            "behaviour": {k: r(v) for k, v in self.behaviour.items()},
            "integrity": {k: r(v) for k, v in self.integrity.items()},
            "analysis": r(self.analysis),
        }


def unit_key(threat: str, budget: float) -> str:
    return str(UnitKey(threat, budget))


class Checkpoint:
    """Finished batches as one .npz each, written to a temp name, fsynced and renamed:
    a batch file exists whole or not at all, whenever the process dies."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, batch: int) -> Path:
        return self.folder / f"batch-{batch:05d}.npz"

    def load(self) -> dict[int, dict[str, np.ndarray]]:
        done: dict[int, dict[str, np.ndarray]] = {}
        if not self.folder.is_dir():
            return done
        for path in sorted(self.folder.glob("batch-*.npz")):
            try:
                with np.load(path, allow_pickle=False) as archive:
                    done[int(path.stem.split("-")[1])] = {k: archive[k] for k in archive.files}
            except (OSError, ValueError, EOFError):
                path.unlink(missing_ok=True)  # unreadable: recompute that batch
        return done

    def save(self, batch: int, arrays: dict[str, np.ndarray]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".batch-{batch:05d}.{os.getpid()}.tmp"
        with tmp.open("wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self._path(batch))

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def run_scan(
    config: HardenConfig,
    target: Target,
    data: Dataset,
    threats: dict[str, Threat],
    *,
    model_sha256: str,
    seed: int | None = None,
    progress: Progress | None = None,
    fingerprint: str = "",
    log: Callable[[str], None] | None = None,
    max_samples: int | None = None,
    max_seconds: float | None = None,
    sequential: bool | None = None,
    reference: Dataset | None = None,
    remedy: Remedy | None = None,
    run_batches: BatchRunner | None = None,
) -> ScanResult:
    """Clean and robust accuracy per threat and budget, policy checks and findings.

    `fingerprint` names the checkpoint: a rerun with the same fingerprint resumes. `remedy`
    proposes each robustness finding's fix (the workflow names the registered patches that
    apply to this model's kind); without it, findings name no patch. `run_batches` runs the
    batches elsewhere (`hardenml.executors`); without it, they run here, one after another.
    """
    progress = progress or SilentProgress()
    log = log or (lambda message: None)
    seed = config.data.seed if seed is None else seed
    sequential = config.scan.sequential if sequential is None else sequential
    max_samples = max_samples or config.scan.max_samples
    max_seconds = max_seconds or config.scan.max_seconds
    confidence = config.policy.confidence
    run_id = uuid.uuid4().hex[:12]
    started = datetime.now(UTC).isoformat(timespec="seconds")
    clock = time.monotonic()
    queries_before = target.queries

    x_all, y_all = torch.from_numpy(data.x), torch.from_numpy(data.y)
    check_access(target, threats)
    require_explainer(config)
    target.check(x_all, need_gradients=any(t.needs_gradients for t in threats.values()))
    # Before any attack: every room below sees the model under its declared rule.
    target, stochastic = stochastic_view(config, target, x_all, seed=seed)
    feature_names = data.provenance.get("feature_names")
    preflight(config, tuple(data.x.shape[1:]), feature_names)
    n_cap = min(len(data), max_samples or len(data))
    batches = batch_plan(len(data), seed=seed, batch_size=config.scan.batch_size, cap=n_cap)
    units = [(t.name, b) for t in config.threats for b in t.budgets]
    shared = shared_threat_models(units, threats)

    checkpoint = (
        Checkpoint(config.artifacts_dir / "checkpoints" / fingerprint[:16]) if fingerprint else None
    )
    done = checkpoint.load() if checkpoint else {}
    done = {b: arrays for b, arrays in done.items() if b < len(batches)}
    if done:
        log(f"resuming: {len(done)} of {len(batches)} batches already done")

    parts: list[dict[str, np.ndarray]] = []
    timings = ScanTimings()
    advance = progress.task(f"scanning {len(units)} threat/budget pairs", n_cap)
    stop_reason = "complete"
    gated = [
        c
        for c in checks_for(config, [], sequential=True, n_max=n_cap, threat_models=shared)
        if _gates_early(c)
    ]
    pending = [BatchShard(b, index) for b, index in enumerate(batches) if b not in done]
    if run_batches is None:
        finished = _in_process(config, target, threats, x_all, y_all, seed, pending)
    else:
        finished = run_batches(pending)
    arrived: dict[int, dict[str, np.ndarray]] = {}
    remote_queries = 0
    try:
        for b, index in enumerate(batches):
            if b in done:
                arrays = done[b]
                advance(len(index))
            else:
                # Shards arrive in the order they finish: each is checkpointed (and counted
                # by the progress) on arrival, and folded in plan order.
                while b not in arrived:
                    got, got_arrays = next(finished)
                    remote_queries += int(got_arrays.pop(SHARD_QUERIES, np.zeros(1)).sum())
                    if checkpoint:
                        checkpoint.save(got, got_arrays)
                    arrived[got] = got_arrays
                    advance(len(batches[got]))
                arrays = arrived.pop(b)
            parts.append(timings.add_batch(_keep_evidence(arrays, _evidence_room(parts, units))))
            if (
                sequential
                and gated
                and all(
                    c.sequential is not None and c.sequential.settled
                    for c in checks_for(
                        config,
                        _measure(parts, units, confidence, seed, shared),
                        sequential=True,
                        n_max=n_cap,
                        threat_models=shared,
                    )
                    if _gates_early(c)
                )
            ):
                stop_reason = "settled"
                break
            if (
                max_seconds is not None
                and time.monotonic() - clock > max_seconds
                and b + 1 < len(batches)
            ):
                stop_reason = "time budget"
                break
    finally:
        # A scan that stopped early leaves no shard running behind it.
        close = getattr(finished, "close", None)
        if close is not None:
            close()
    if stop_reason == "complete" and n_cap < len(data):
        stop_reason = "sample budget"

    measurements = _measure(parts, units, confidence, seed, shared)
    outcomes = _stack(parts)
    behaviour = _behaviour(config, target, data, outcomes, seed, progress)
    timings.behaviour = {r.name: r.seconds for r in behaviour}
    behaviour_measurements = [r.measurement() for r in behaviour]
    checks = checks_for(
        config,
        measurements + behaviour_measurements,
        sequential=sequential,
        n_max=n_cap,
        threat_models=shared,
    )
    text = target.input_spec.modality == "text"
    evidence = {
        unit_key(name, budget): save_evidence(
            config.artifacts_dir / run_id,
            unit_key(name, budget),
            outcomes,
            config.root,
            target.input_spec.bounds,
            classes=target.classes if text else None,
        )
        for name, budget in units
        if len(outcomes.get(f"evidence/{unit_key(name, budget)}/y", ()))
    }
    if config.explain.enabled:
        # Only the evidence a finding will carry: the units whose policy check failed.
        failing = {
            unit_key(c.threat, c.budget)
            for c in checks
            if not c.passed and c.threat is not None and c.budget is not None
        }
        for key in sorted(failing & set(evidence)):
            kept = {k: outcomes[f"evidence/{key}/{k}"] for k in ("x", "x_adv", "y", "pred")}
            evidence[key] += explain_evidence(
                config,
                target,
                config.artifacts_dir / run_id,
                key,
                kept,
                lambda path: _shown(path, config.root),
            )
    evidence |= {
        r.check_name: _save_behaviour_evidence(
            config.artifacts_dir / run_id, r, config.root, classes=target.classes if text else None
        )
        for r in behaviour
        if not r.passed and len(r.examples.get("y", ()))
    }
    findings = []
    passed_ids: dict[str, float] = {}
    clean = next((m for m in measurements if m.key == "clean_accuracy"), None)
    for c in checks:
        if c.measurement is None:
            continue
        if c.passed:
            passed_ids[finding_id_for(config.model.name, c.threat, c.metric, c.budget)] = (
                c.measurement.value
            )
            continue
        # A worst-case check shows the examples of every attack it counts.
        keys = (
            [unit_key(threat, c.budget) for threat in (c.attacks or (c.threat,))]
            if c.threat is not None and c.budget is not None
            else [c.name]
        )
        findings.append(
            finding_for(
                config,
                c,
                [entry for key in keys for entry in evidence.get(key, [])],
                threat=threats.get(c.threat) if c.threat is not None else None,
                clean=clean,
                remedy=remedy,
            )
        )
    corruption_threats = {name for name, t in threats.items() if t.family == "corruption"}
    analysis_started = time.perf_counter()
    analysis = analyse(
        config,
        data,
        outcomes,
        units,
        corruption_threats=corruption_threats,
        seed=seed,
        reference=reference,
    )
    timings.analysis = time.perf_counter() - analysis_started
    measurements += analysis.measurements + behaviour_measurements
    analysis.behaviour = [r.as_dict() for r in behaviour]
    for gap in analysis.slices:
        outcome = None if gap["outcome"] == "clean" else gap["outcome"]
        threat, budget = (None, None) if outcome is None else UnitKey.parse(outcome)
        fid = finding_id_for(config.model.name, threat, "slice_gap", budget, gap["name"])
        if gap["flagged"]:
            findings.append(slice_finding(config, gap, threat, budget))
        elif gap["gap"] is not None:
            passed_ids[fid] = gap["gap"]
    integrity = _integrity(
        config, target, threats, x_all, y_all, outcomes, seed, progress, timings.integrity
    )
    # One finding per model and signal, whichever threats it fired for.
    for check, results in by_check(integrity).items():
        fid = finding_id_for(config.model.name, None, f"integrity:{check}", None)
        flagged = [r for r in results if r.flagged]
        if flagged:
            findings.append(integrity_finding(config, flagged))
        else:
            passed_ids[fid] = max(r.value for r in results)
    analysis.integrity = [c.as_dict() for c in integrity]
    analysis.integrity_not_applicable = _integrity_not_applicable(config, threats)
    for note in analysis.integrity_not_applicable:
        log(f"integrity: {note['reason']}")
    result = ScanResult(
        run_id=run_id,
        model=config.model.name,
        model_sha256=model_sha256,
        data_sha256=data.sha256,
        seed=seed,
        n=int(sum(len(p["y"]) for p in parts)),
        measurements=measurements,
        checks=checks,
        findings=findings,
        started=started,
        finished=datetime.now(UTC).isoformat(timespec="seconds"),
        data_provenance=data.provenance,
        scan_fingerprint=fingerprint,
        sequential=sequential,
        n_available=len(data),
        n_max=n_cap,
        batches_done=len(parts),
        batches_total=len(batches),
        batches_resumed=len(done),
        stop_reason=stop_reason,
        queries=target.queries - queries_before + remote_queries,
        outcomes=outcomes,
        analysis=analysis.payload(),
        passed_ids=passed_ids,
        stochastic=stochastic,
        threat_models=shared,
        seconds=timings.as_dict(),
    )
    return result


def _gates_early(check: PolicyCheck) -> bool:
    """Checks a sequential scan waits for: those decided batch by batch (not the
    behavioural suites, which run once after the last batch)."""
    return check.mode == "sequential"


def _behaviour(
    config: HardenConfig,
    target: Target,
    data: Dataset,
    outcomes: dict[str, np.ndarray],
    seed: int,
    progress: Progress,
) -> list[SuiteResult]:
    """The behavioural suites on the samples the scan evaluated, in the data's order (so a
    full scan and the validator test the same samples with the same draws)."""
    index = np.sort(outcomes.get("index", np.zeros(0, dtype=np.int64)))
    if not config.behaviour or not len(index):
        return []
    advance = progress.task("behavioural suites", len(config.behaviour))
    results = run_suites(
        config,
        target,
        data.x[index],
        data.y[index],
        feature_names=data.provenance.get("feature_names"),
        seed=seed,
    )
    advance(len(config.behaviour))
    return results


def _save_behaviour_evidence(
    folder: Path, result: SuiteResult, root: Path, *, classes: tuple[str, ...] | None = None
) -> list[dict[str, Any]]:
    """Failing samples of a suite, before and after its change, as an .npz with sha256
    (and, for a text model, the strings as JSON: `classes` given)."""
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **result.examples)  # type: ignore[arg-type]
    blob = buffer.getvalue()
    path = folder / f"behaviour-{result.name}.npz"
    path.write_bytes(blob)
    entries = [
        {
            "kind": "behaviour_failures",
            "path": _shown(path, root),
            "count": len(result.examples["y"]),
            "sha256": hashlib.sha256(blob).hexdigest(),
        }
    ]
    if classes is None:
        return entries
    changed = {**result.examples, "x_adv": result.examples["x_changed"]}
    return entries + _text_examples(folder, f"behaviour-{result.name}", changed, classes, root)


def _integrity(
    config: HardenConfig,
    target: Target,
    threats: dict[str, Threat],
    x_all: torch.Tensor,
    y_all: torch.Tensor,
    outcomes: dict[str, np.ndarray],
    seed: int,
    progress: Progress,
    seconds: dict[str, float],
) -> list[IntegrityResult]:
    """Evaluation-integrity checks on a sub-sample of the scanned inputs: the model's own
    once, then each white-box gradient threat's at its largest budget, against the scan's
    outcome for it on those samples (so the threat is not rerun). The time each threat's
    checks took goes into `seconds`."""
    cfg = config.integrity
    if not cfg.enabled or not config.threats or not len(outcomes.get("index", ())):
        return []
    gradient = [
        t
        for t in config.threats
        if threats[t.name].family == "gradient"
        and threats[t.name].norm in ("linf", "l2")
        and max(t.budgets) > 0
    ]
    classes = len(target.classes)
    blackbox = next(
        (t.name for t in config.threats if has_blackbox_stage(threats[t.name], classes)), None
    )
    index = outcomes["index"][: cfg.samples]
    x, y = x_all[index], y_all[index]
    advance = progress.task("evaluation integrity checks", 1 + len(gradient))
    results = check_model(
        target,
        x,
        y,
        config=cfg,
        seed=derive_seed(seed, "integrity"),
        gradients=bool(gradient),
        blackbox=blackbox,
    )
    advance(1)
    for t in gradient:
        budget = max(t.budgets)
        started = time.perf_counter()
        results += check_threat(
            t.name,
            threats[t.name],
            target,
            x,
            y,
            budget,
            config=cfg,
            seed=derive_seed(seed, "integrity", t.name),
            robust=torch.from_numpy(outcomes[f"robust/{unit_key(t.name, budget)}"][: cfg.samples]),
        )
        seconds[t.name] = time.perf_counter() - started
        advance(1)
    return results


def _integrity_not_applicable(
    config: HardenConfig, threats: dict[str, Threat]
) -> list[dict[str, Any]]:
    """The threats the gradient-masking checks skip because they cannot apply, and why:
    said in the scan's output, never left silent."""
    if not config.integrity.enabled:
        return []
    return [
        {
            "threat": t.name,
            "reason": (
                f"the gradient-masking checks do not apply to {t.name!r}: it edits discrete "
                "text, so there are no input gradients to mask; the model's own checks "
                "(stochastic and probability outputs) still ran"
            ),
        }
        for t in config.threats
        if threats[t.name].family == "text"
    ]


def _evidence_room(
    parts: list[dict[str, np.ndarray]], units: list[tuple[str, float]]
) -> dict[str, int]:
    room = {}
    for name, budget in units:
        key = f"evidence/{unit_key(name, budget)}/y"
        room[unit_key(name, budget)] = EVIDENCE_PER_THREAT - sum(len(p.get(key, ())) for p in parts)
    return room


def scan_shard(
    config: HardenConfig,
    target: Target,
    threats: dict[str, Threat],
    x_all: torch.Tensor,
    y_all: torch.Tensor,
    shard: BatchShard,
    *,
    seed: int,
) -> BatchArrays:
    """One shard of the scan of `x_all, y_all`: what a worker of `hardenml.executors` runs,
    and what the scan runs itself when no executor is given. `target` must be the model as
    the scan evaluates it (`stochastic_view`), `threats` prepared on the reference split."""
    units = [(t.name, b) for t in config.threats for b in t.budgets]
    index = shard.index
    return _scan_batch(
        config,
        target,
        threats,
        units,
        index,
        x_all[index],
        y_all[index],
        seed=seed,
        batch=shard.batch,
    )


def _in_process(
    config: HardenConfig,
    target: Target,
    threats: dict[str, Threat],
    x_all: torch.Tensor,
    y_all: torch.Tensor,
    seed: int,
    shards: list[BatchShard],
) -> Iterator[tuple[int, BatchArrays]]:
    """The shards one after another in this process, each only when the scan asks for it
    (a sequential scan that settles computes no batch past the one that settled it)."""
    for shard in shards:
        yield shard.batch, scan_shard(config, target, threats, x_all, y_all, shard, seed=seed)


def _keep_evidence(arrays: BatchArrays, room: dict[str, int]) -> BatchArrays:
    """The batch with only as many flipped inputs per unit as the evidence still has room
    for (`EVIDENCE_PER_THREAT` over the whole scan, the earliest batches first)."""
    kept = dict(arrays)
    for key, left in room.items():
        for part in ("x", "x_adv", "y", "pred"):
            name = f"evidence/{key}/{part}"
            if name in kept:
                kept[name] = kept[name][: max(0, left)]
    return kept


def _scan_batch(
    config: HardenConfig,
    target: Target,
    threats: dict[str, Threat],
    units: list[tuple[str, float]],
    index: np.ndarray,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    seed: int,
    batch: int,
) -> dict[str, np.ndarray]:
    """Every threat and budget on one batch: per-sample outcomes as plain arrays, with up
    to `EVIDENCE_PER_THREAT` flipped inputs per unit (the fold keeps the first ones in plan
    order, so the batch needs nothing from the batches before it)."""
    started = time.perf_counter()
    arrays: dict[str, np.ndarray] = {
        "index": index,
        "y": y.numpy(),
        "clean_probs": clean_probabilities(target, x),
    }
    arrays[CLEAN_SECONDS] = np.array([time.perf_counter() - started])
    chunk_of = {t.name: t.batch_size for t in config.threats}
    for name, budget in units:
        key = unit_key(name, budget)
        started = time.perf_counter()
        outcome = attack_batch(
            target,
            threats[name],
            x,
            y,
            UnitKey(name, budget),
            seed=seed,
            batch=batch,
            chunk=chunk_of[name],
        )
        arrays[f"{SECONDS_PREFIX}{key}"] = np.array([time.perf_counter() - started])
        arrays[f"robust/{key}"] = outcome.robust
        arrays[f"adv_probs/{key}"] = outcome.adv_probs
        arrays[f"margin/{key}"] = outcome.margins
        fooled = ~arrays[f"robust/{key}"] & (arrays["clean_probs"].argmax(1) == arrays["y"])
        take = EVIDENCE_PER_THREAT
        ev_y = arrays["y"][fooled][:take]
        arrays[f"evidence/{key}/x"] = x.numpy()[outcome.flipped][:take]
        arrays[f"evidence/{key}/x_adv"] = outcome.x_adv[outcome.flipped][:take]
        arrays[f"evidence/{key}/y"] = ev_y
        arrays[f"evidence/{key}/pred"] = arrays[f"adv_probs/{key}"][fooled][:take].argmax(1)
    return arrays


def _stack(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not parts:
        return {}
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _measure(
    parts: list[dict[str, np.ndarray]],
    units: list[tuple[str, float]],
    confidence: float,
    seed: int,
    shared: list[SharedThreatModel],
) -> list[Measurement]:
    """Clean accuracy, robust accuracy per threat and budget, and the per-sample worst case
    of each threat model more than one threat attacked (`robust_accuracy_worst[linf@0.1]`)."""
    y = np.concatenate([p["y"] for p in parts])
    clean = np.concatenate([p["clean_probs"] for p in parts]).argmax(1) == y
    n = len(y)
    out = [proportion("clean_accuracy", int(clean.sum()), n, confidence=confidence, seed=seed)]
    robust = {
        unit_key(name, budget): np.concatenate(
            [p[f"robust/{unit_key(name, budget)}"] for p in parts]
        )
        for name, budget in units
    }
    for name, budget in units:
        out.append(
            proportion(
                "robust_accuracy",
                int(robust[unit_key(name, budget)].sum()),
                n,
                threat=name,
                budget=budget,
                confidence=confidence,
                seed=seed,
            )
        )
    for model in shared:
        out.append(
            proportion(
                WORST_CASE_METRIC,
                int(worst_case(robust, model).sum()),
                n,
                threat=model.model.space,
                budget=model.model.budget,
                confidence=confidence,
                seed=seed,
            )
        )
    return out


def save_evidence(
    folder: Path,
    stem: str,
    outcomes: dict[str, np.ndarray],
    root: Path,
    bounds: tuple[float, float],
    *,
    classes: tuple[str, ...] | None = None,
) -> list[dict[str, Any]]:
    """Adversarial examples beside their originals, as an .npz addressed by sha256; for a
    text model (`classes` given) the strings too, as JSON, instead of thumbnails."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {k: outcomes[f"evidence/{stem}/{k}"] for k in ("x", "x_adv", "y", "pred")}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    blob = buffer.getvalue()
    path = folder / f"{stem}.npz"
    path.write_bytes(blob)
    shown = _shown(path, root)
    entries = [
        {
            "kind": "adversarial_examples",
            "path": shown,
            "count": len(arrays["y"]),
            "sha256": hashlib.sha256(blob).hexdigest(),
        }
    ]
    if classes is not None:
        return entries + _text_examples(folder, stem, arrays, classes, root)
    return entries + _thumbnails(folder, stem, arrays, bounds, root)


def _text_examples(
    folder: Path,
    stem: str,
    arrays: dict[str, np.ndarray],
    classes: tuple[str, ...],
    root: Path,
) -> list[dict[str, Any]]:
    """A text model's examples as readable strings: original, changed, class, prediction."""
    rows = [
        {
            "original": original,
            "changed": changed,
            "label": classes[int(label)],
            "prediction": classes[int(pred)],
        }
        for original, changed, label, pred in zip(
            decode_texts(arrays["x"]),
            decode_texts(arrays["x_adv"]),
            arrays["y"],
            arrays["pred"],
            strict=True,
        )
    ]
    blob = json.dumps(rows, ensure_ascii=True, indent=1).encode()
    path = folder / f"{stem}-texts.json"
    path.write_bytes(blob)
    return [
        {
            "kind": "text_examples",
            "path": _shown(path, root),
            "count": len(rows),
            "sha256": hashlib.sha256(blob).hexdigest(),
        }
    ]


def _thumbnails(
    folder: Path, stem: str, arrays: dict[str, np.ndarray], bounds: tuple[float, float], root: Path
) -> list[dict[str, Any]]:
    """Image inputs: one PNG per example, original | adversarial | change, side by side."""
    shape = arrays["x"].shape[1:]
    is_image = len(shape) == 2 or (len(shape) == 3 and shape[0] in (1, 3))
    if not is_image:
        return []
    out = []
    for i in range(min(THUMBNAILS, len(arrays["y"]))):
        parts = [
            to_pixels(arrays["x"][i], bounds),
            to_pixels(arrays["x_adv"][i], bounds),
            delta_pixels(arrays["x_adv"][i] - arrays["x"][i]),
        ]
        gap = np.full((parts[0].shape[0], 2, *parts[0].shape[2:]), 255, dtype=np.uint8)
        strip = upscale(np.concatenate([parts[0], gap, parts[1], gap, parts[2]], axis=1))
        blob = png_bytes(strip)
        path = folder / f"{stem}-{i:02d}.png"
        path.write_bytes(blob)
        out.append(
            {
                "kind": "thumbnail",
                "path": _shown(path, root),
                "label": int(arrays["y"][i]),
                "adversarial_prediction": int(arrays["pred"][i]),
                "sha256": hashlib.sha256(blob).hexdigest(),
            }
        )
    return out


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)
