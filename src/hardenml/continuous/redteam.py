"""Scheduled red-teaming: a broader, slower search than the release scan, within the same
threat model, that reports only what the ledger does not know yet.

The threat model is what the `[[threats]]` declare: for each space a budget bounds
(`Threat.threat_space()`: "linf", "l2"), the budgets declared in it, across every threat
in that space; a threat whose budget means something of its own (a corruption's severity,
a tabular threat's constrained step) is a space by itself, bounded only where it is
declared. A red-team run takes every registered threat that applies to the target (its
family is not a prompt probe, the target gives the access it declares,
`threats.check_access`, and its space is in the threat model) and runs it at every
budget declared in its space, so an attack is tried up to the threat model's largest
budget even where the release scan ran it only at a smaller one; never beyond: a model
that fails outside its threat model has no finding to answer for.

Each run draws, per threat and trial, the threat's effort parameters (`Threat.effort`:
steps, restarts, queries) uniformly between the configured value (the declared one, else
the constructor's default) and `[redteam] effort` times it, from a generator seeded by
`--seed`, the threat and the trial. With `[redteam] trials` above 1, a sample counts as
robust only if it withstood every draw (the worst case, as the scan judges a threat
model). Attacks run through the scan's one attack loop (`scan.evaluation`: the same batch
plan, per-batch generators and chunks), and robust accuracy gets the scan's Wilson
interval.

A result at budget `b` is judged against the `[[policy.robust]]` requirements of its
space at budgets at least `b` (a sample flipped within `b` is flipped within any larger
budget, so failing `m` at `b` fails every such requirement); of those, the one asking the
most. A failure becomes a finding by the scan's own machinery (`scan.policy.finding_for`)
about the threat `redteam-<attack>`, so its fingerprint does not depend on the drawn
parameters, and it is new only when the ledger holds no finding of that fingerprint, nor
a scan finding of a declared threat with the same attack at that budget, that is still
tracked; a fixed one that is seen again is reopened.
"""

from __future__ import annotations

import inspect
import math
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from hardenml._progress import Progress, SilentProgress
from hardenml.config import ConfigError, ConfigProblem, HardenConfig
from hardenml.data import Dataset
from hardenml.ledger import Event, Ledger, findings_state
from hardenml.ledger.findings import due_date
from hardenml.records import (
    REDTEAM_COMPLETED,
    Finding,
    Measurement,
    RedteamCompleted,
    UnitKey,
    finding_id_for,
    metric_key,
)
from hardenml.scan.evaluation import attack_batch, batch_plan, clean_probabilities
from hardenml.scan.metrics import proportion
from hardenml.scan.policy import PolicyCheck, Remedy, finding_for
from hardenml.scan.scanner import EVIDENCE_PER_THREAT, save_evidence
from hardenml.scan.stochastic import stochastic_view
from hardenml.stats import derive_seed
from hardenml.targets import Target, TargetError
from hardenml.threats import Threat, check_access
from hardenml.threats.registry import available_threats, threat_class

REDTEAM_DIR = "redteam"
FINDING_PREFIX = "redteam-"
DEFAULT_CHUNK = 256
StopReason = Literal["complete", "time budget"]


def space_of(threat: Threat, attack: str) -> str:
    """The space the threat's budget bounds: its norm, or the attack itself when its budget
    means something of its own (then only its own declared budgets bound it)."""
    return threat.threat_space() or f"attack:{attack}"


@dataclass(frozen=True)
class Requirement:
    """A `[[policy.robust]]` requirement as the red team judges by it."""

    key: str
    budget: float
    min_accuracy: float


@dataclass(frozen=True)
class ThreatModelBounds:
    """Per space: the budgets the `[[threats]]` declare in it, and its requirements."""

    budgets: dict[str, tuple[float, ...]]
    requirements: dict[str, tuple[Requirement, ...]]

    def judge(self, space: str, budget: float) -> Requirement | None:
        """The requirement a result at `budget` fails first: of those of the space at a
        budget at least `budget`, the one asking the most robust accuracy."""
        covering = [r for r in self.requirements.get(space, ()) if r.budget >= budget]
        return max(covering, key=lambda r: (r.min_accuracy, -r.budget), default=None)


def threat_model_bounds(config: HardenConfig, declared: dict[str, Threat]) -> ThreatModelBounds:
    """The threat model of `config`: its spaces, their declared budgets and requirements."""
    budgets: dict[str, set[float]] = {}
    space_by_name = {}
    for cfg in config.threats:
        space = space_of(declared[cfg.name], cfg.attack)
        space_by_name[cfg.name] = space
        budgets.setdefault(space, set()).update(cfg.budgets)
    requirements: dict[str, list[Requirement]] = {}
    for req in config.policy.robust:
        requirements.setdefault(space_by_name[req.threat], []).append(
            Requirement(
                metric_key("robust_accuracy", req.threat, req.budget), req.budget, req.min_accuracy
            )
        )
    return ThreatModelBounds(
        {space: tuple(sorted(b)) for space, b in budgets.items()},
        {space: tuple(reqs) for space, reqs in requirements.items()},
    )


@dataclass(frozen=True)
class Trial:
    """One draw of one registered threat: its parameters, the space and the budgets."""

    attack: str
    index: int
    threat: Threat
    drawn: dict[str, int]
    space: str
    budgets: tuple[float, ...]
    chunk: int

    @property
    def unit_name(self) -> str:
        """The name its attacks are seeded by (`attack_batch`): one per attack and trial."""
        return f"{FINDING_PREFIX}{self.attack}.{self.index}"


def _base_params(config: HardenConfig, attack: str) -> tuple[dict[str, Any], int]:
    """The parameters and chunk size the config gives `attack` (its first declaration),
    so a declared tabular threat keeps its feature constraints; else none."""
    cfg = next((t for t in config.threats if t.attack == attack), None)
    return ({}, DEFAULT_CHUNK) if cfg is None else (cfg.params, cfg.batch_size)


def draw_effort(
    cls: type[Threat], base: dict[str, Any], *, effort: float, rng: np.random.Generator
) -> dict[str, int]:
    """Each declared effort parameter drawn uniformly from `[v, floor(effort * v)]`, `v` the
    configured value (or the constructor's default); a parameter at 0 stays off."""
    defaults = {
        p.name: p.default
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.kind is p.KEYWORD_ONLY
    }
    drawn = {}
    for name in cls.effort:
        start = base.get(name, defaults.get(name))
        if not isinstance(start, int) or isinstance(start, bool) or start < 1:
            continue
        high = max(start, math.floor(effort * start))
        drawn[name] = int(rng.integers(start, high + 1))
    return drawn


def check_skip(config: HardenConfig) -> None:
    """`[redteam] skip` may name only registered threats: a typo would run what the user
    meant to leave out."""
    registered = available_threats()
    problems = [
        ConfigProblem(
            f"redteam.skip[{i}]",
            name,
            f"the name of a registered threat: one of {registered}",
            config.key_lines.get("redteam.skip"),
        )
        for i, name in enumerate(config.redteam.skip)
        if name not in registered
    ]
    if problems:
        raise ConfigError(config.source, problems)


@dataclass(frozen=True)
class TrialPlan:
    trials: list[Trial]
    skipped: dict[str, str]


def plan_trials(
    config: HardenConfig,
    target: Target,
    bounds: ThreatModelBounds,
    *,
    seed: int,
    reference: Dataset | None = None,
) -> TrialPlan:
    """Every registered threat that applies to `target` and the threat model, drawn
    `[redteam] trials` times; the others with the reason they do not run."""
    settings = config.redteam
    trials: list[Trial] = []
    skipped: dict[str, str] = {}
    rows = None if reference is None else torch.from_numpy(reference.x)
    for attack in available_threats():
        if attack in settings.skip:
            skipped[attack] = "listed in [redteam] skip"
            continue
        try:
            cls = threat_class(attack)
        except Exception as exc:  # a broken third-party plugin must not stop the night's run
            skipped[attack] = f"does not load: {exc}"
            continue
        if cls.family == "prompt":
            skipped[attack] = "a prompt probe: it runs on chat models (`hardenml scan`)"
            continue
        base, chunk = _base_params(config, attack)
        try:
            probe = cls(**base)
            check_access(target, {attack: probe})
        except TargetError as exc:
            skipped[attack] = str(exc)
            continue
        except Exception as exc:  # TypeError, ValueError, a missing optional dependency
            skipped[attack] = (
                f"cannot be built from its defaults ({exc}); declare it in [[threats]] "
                "with its parameters"
            )
            continue
        space = space_of(probe, attack)
        if space not in bounds.budgets:
            skipped[attack] = f"outside the threat model: no declared threat bounds {space}"
            continue
        for index in range(settings.trials):
            rng = np.random.default_rng(derive_seed(seed, "redteam", attack, index))
            drawn = draw_effort(cls, base, effort=settings.effort, rng=rng)
            threat = cls(**{**base, **drawn})
            if rows is not None:
                threat.prepare(rows)
            trials.append(Trial(attack, index, threat, drawn, space, bounds.budgets[space], chunk))
    return TrialPlan(trials, skipped)


@dataclass
class UnitResult:
    """One attack at one budget over every trial of it: the worst case per sample, its
    measurement, and the requirement that judged it (None: none covers this budget)."""

    attack: str
    space: str
    budget: float
    drawn: list[dict[str, int]]
    measurement: Measurement
    requirement: Requirement | None
    finding: Finding | None = None

    @property
    def finding_threat(self) -> str:
        return f"{FINDING_PREFIX}{self.attack}"

    def as_dict(self) -> dict[str, Any]:
        m = self.measurement
        return {
            "attack": self.attack,
            "space": self.space,
            "budget": self.budget,
            "params": self.drawn,
            "value": m.value,
            "ci": [m.ci_low, m.ci_high],
            "n": m.n,
            "requirement": None if self.requirement is None else self.requirement.key,
            "threshold": None if self.requirement is None else self.requirement.min_accuracy,
            "passed": None if self.requirement is None else self.finding is None,
            "finding_id": None if self.finding is None else self.finding.finding_id,
        }


@dataclass
class RedteamResult:
    """What a red-team run measured; `new`, `reopened` and `known` are filled when it is
    recorded (`record_redteam`), against the ledger as it stands then."""

    run_id: str
    model: str
    model_sha256: str
    data_sha256: str
    seed: int
    n: int
    started: str
    seconds: float
    stop_reason: StopReason
    time_budget_s: float | None
    clean: Measurement
    units: list[UnitResult]
    not_covered: list[str]
    skipped: dict[str, str]
    new: list[Finding] = field(default_factory=list)
    reopened: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)
    event: Event | None = None

    @property
    def findings(self) -> list[Finding]:
        return [u.finding for u in self.units if u.finding is not None]

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "model": self.model,
            "model_sha256": self.model_sha256,
            "data_sha256": self.data_sha256,
            "seed": self.seed,
            "n": self.n,
            "started": self.started,
            "seconds": round(self.seconds, 3),
            "stop_reason": self.stop_reason,
            "time_budget_s": self.time_budget_s,
            "clean_accuracy": self.clean.as_dict(),
            "units": [u.as_dict() for u in self.units],
            "not_covered": self.not_covered,
            "skipped": self.skipped,
            "new_findings": [f.as_dict() for f in self.new],
            "reopened": self.reopened,
            "known_findings": self.known,
            "ledger_seq": None if self.event is None else self.event.seq,
        }


@dataclass
class _UnitRun:
    robust: list[np.ndarray] = field(default_factory=list)
    evidence: dict[str, list[np.ndarray]] = field(
        default_factory=lambda: {k: [] for k in ("x", "x_adv", "y", "pred")}
    )
    batches: int = 0


def run_redteam(
    config: HardenConfig,
    target: Target,
    data: Dataset,
    *,
    model_sha256: str,
    declared: dict[str, Threat],
    seed: int,
    reference: Dataset | None = None,
    progress: Progress | None = None,
    max_seconds: float | None = None,
    remedy: Remedy | None = None,
) -> RedteamResult:
    """Run every applicable registered threat at every budget of its space, judge each
    against the policy and write the evidence of each failure; nothing is recorded."""
    progress = progress or SilentProgress()
    settings = config.redteam
    check_skip(config)
    max_seconds = max_seconds if max_seconds is not None else settings.max_seconds
    clock = time.monotonic()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    run_id = uuid.uuid4().hex[:12]
    bounds = threat_model_bounds(config, declared)
    plan = plan_trials(config, target, bounds, seed=seed, reference=reference)
    x_all, y_all = torch.from_numpy(data.x), torch.from_numpy(data.y)
    target, _ = stochastic_view(config, target, x_all, seed=seed)
    cap = settings.max_samples or config.scan.max_samples
    batches = batch_plan(len(data), seed=seed, batch_size=config.scan.batch_size, cap=cap)
    order = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
    n = len(order)
    y_order = data.y[order]
    clean_correct = clean_probabilities(target, x_all[order]).argmax(1) == y_order
    confidence = config.policy.confidence
    clean = proportion(
        "clean_accuracy", int(clean_correct.sum()), n, confidence=confidence, seed=seed
    )

    work = [(trial, budget) for trial in plan.trials for budget in trial.budgets]
    advance = progress.task(f"red-teaming {len(work)} attack/budget draws", len(work) * n)
    runs: dict[tuple[str, int, float], _UnitRun] = {}
    stop_reason: StopReason = "complete"
    for trial, budget in work:
        unit = runs.setdefault((trial.attack, trial.index, budget), _UnitRun())
        for b, index in enumerate(batches):
            if max_seconds is not None and time.monotonic() - clock > max_seconds:
                stop_reason = "time budget"
                break
            outcome = attack_batch(
                target,
                trial.threat,
                x_all[index],
                y_all[index],
                UnitKey(trial.unit_name, budget),
                seed=seed,
                batch=b,
                chunk=trial.chunk,
            )
            unit.robust.append(outcome.robust)
            # Only as many flipped inputs as the evidence keeps (the scan's cap), the
            # earliest batches first: a large split must not be held in memory twice.
            room = EVIDENCE_PER_THREAT - sum(len(y) for y in unit.evidence["y"])
            flipped = np.flatnonzero(outcome.flipped)[: max(0, room)]
            unit.evidence["x"].append(data.x[index][flipped])
            unit.evidence["x_adv"].append(outcome.x_adv[flipped])
            unit.evidence["y"].append(data.y[index][flipped])
            unit.evidence["pred"].append(outcome.adv_probs[flipped].argmax(1))
            unit.batches += 1
            advance(len(index))
        if stop_reason != "complete":
            break

    units: list[UnitResult] = []
    not_covered: list[str] = []
    folder = config.artifacts_dir / REDTEAM_DIR / run_id
    seen: set[tuple[str, float]] = set()
    for trial, budget in work:
        key = (trial.attack, budget)
        if key in seen:
            continue
        seen.add(key)
        draws = [t for t in plan.trials if t.attack == trial.attack]
        parts = [runs.get((t.attack, t.index, budget)) for t in draws]
        if any(p is None or p.batches < len(batches) for p in parts):
            not_covered.append(str(UnitKey(trial.attack, budget)))
            continue
        finished = [p for p in parts if p is not None]
        robust = np.logical_and.reduce([np.concatenate(p.robust) for p in finished])
        result = UnitResult(
            trial.attack,
            trial.space,
            budget,
            [t.drawn for t in draws],
            proportion(
                "robust_accuracy",
                int(robust.sum()),
                n,
                threat=f"{FINDING_PREFIX}{trial.attack}",
                budget=budget,
                confidence=confidence,
                seed=seed,
            ),
            bounds.judge(trial.space, budget),
        )
        result.finding = _finding(config, result, trial.threat, clean, finished, folder, remedy)
        units.append(result)
    return RedteamResult(
        run_id=run_id,
        model=config.model.name,
        model_sha256=model_sha256,
        data_sha256=data.sha256,
        seed=seed,
        n=n,
        started=started,
        seconds=time.monotonic() - clock,
        stop_reason=stop_reason,
        time_budget_s=max_seconds,
        clean=clean,
        units=units,
        not_covered=not_covered,
        skipped=plan.skipped,
    )


def _finding(
    config: HardenConfig,
    unit: UnitResult,
    threat: Threat,
    clean: Measurement,
    parts: list[_UnitRun],
    folder: Path,
    remedy: Remedy | None,
) -> Finding | None:
    """The finding of a unit that fails its requirement, with its evidence written."""
    req = unit.requirement
    if req is None:
        return None
    check = PolicyCheck(
        metric_key("robust_accuracy", unit.finding_threat, unit.budget),
        "robust_accuracy",
        unit.finding_threat,
        unit.budget,
        req.min_accuracy,
        unit.measurement,
    )
    if check.passed:
        return None
    stem = str(UnitKey(unit.finding_threat, unit.budget))
    kept = {
        f"evidence/{stem}/{k}": np.concatenate([a for p in parts for a in p.evidence[k]])[
            :EVIDENCE_PER_THREAT
        ]
        for k in ("x", "x_adv", "y", "pred")
    }
    evidence = (
        save_evidence(folder, stem, kept, config.root, input_bounds(config))
        if len(kept[f"evidence/{stem}/y"])
        else []
    )
    finding = finding_for(config, check, evidence, threat=threat, clean=clean, remedy=remedy)
    trials = [", ".join(f"{k}={v}" for k, v in d.items()) for d in unit.drawn]
    if not any(trials):
        drawn = "its default settings"
    elif len(trials) == 1:
        drawn = trials[0]
    else:
        drawn = f"{len(trials)} draws: " + " | ".join(t or "defaults" for t in trials)
    return replace(
        finding,
        title=f"{finding.title} (red team: {unit.attack} with {drawn}; fails {req.key})",
    )


def input_bounds(config: HardenConfig) -> tuple[float, float]:
    """The model's declared input bounds, which the evidence thumbnails are drawn in."""
    return (float(config.model.input.bounds[0]), float(config.model.input.bounds[1]))


def _equivalents(config: HardenConfig, unit: UnitResult) -> list[str]:
    """The finding ids the ledger may already hold for this attack at this budget: the red
    team's own, and the scan's for each declared threat with the same attack."""
    model = config.model.name
    ids = [finding_id_for(model, unit.finding_threat, "robust_accuracy", unit.budget)]
    ids += [
        finding_id_for(model, t.name, "robust_accuracy", unit.budget)
        for t in config.threats
        if t.attack == unit.attack
    ]
    return ids


def record_redteam(ledger: Ledger, config: HardenConfig, result: RedteamResult) -> RedteamResult:
    """Record the run and its new findings as one group of events, deduplicated against
    the findings the ledger holds under its write lock (two runs at once open each once)."""

    def build(current: list[Event]) -> list[tuple[str, dict[str, Any]]]:
        known = findings_state(current)
        result.new, result.reopened, result.known = [], [], []
        events: list[tuple[str, dict[str, Any]]] = []
        for unit in result.units:
            finding = unit.finding
            if finding is None:
                continue
            states = [known[fid] for fid in _equivalents(config, unit) if fid in known]
            if any(s.status != "fixed" for s in states):
                result.known.append(next(s.finding_id for s in states if s.status != "fixed"))
                continue
            payload = {
                **finding.as_dict(),
                "run_id": result.run_id,
                "due": due_date(config, finding.severity),
            }
            if finding.finding_id in known:
                events.append(
                    ("finding.reopened", {**payload, "reason": "seen again by hardenml redteam"})
                )
                result.reopened.append(finding.finding_id)
            else:
                events.append(("finding.opened", payload))
            result.new.append(finding)
        record = RedteamCompleted(
            run_id=result.run_id,
            model=result.model,
            model_sha256=result.model_sha256,
            data_sha256=result.data_sha256,
            seed=result.seed,
            n=result.n,
            effort=config.redteam.effort,
            trials=config.redteam.trials,
            stop_reason=result.stop_reason,
            seconds=round(result.seconds, 3),
            time_budget_s=result.time_budget_s,
            units=[u.as_dict() for u in result.units],
            not_covered=result.not_covered,
            skipped=result.skipped,
            new_findings=[f.finding_id for f in result.new],
            known_findings=result.known,
        )
        return [(REDTEAM_COMPLETED, record.to_payload()), *events]

    written = ledger.append_derived(build)
    result.event = written[0]
    return result
