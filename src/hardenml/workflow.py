"""The library API behind every CLI command: open a workspace, scan, gate.

The CLI parses arguments, calls these and prints; a Python user calls the same.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hardenml._progress import Progress
from hardenml.config import (
    ConfigError,
    ConfigProblem,
    HardenConfig,
    LedgerConfig,
    ModelConfig,
    ReportsConfig,
    find_config,
    load_config,
)
from hardenml.continuous.redteam import RedteamResult, record_redteam, run_redteam
from hardenml.continuous.replay import ReplayError, row_ids
from hardenml.continuous.retrain import (
    RETRAIN_PATCH,
    lineage_params,
    replayed_source_ids,
    retrain_params,
    retrain_source,
)
from hardenml.data import DataError, Dataset, fit_to_shape, prepare
from hardenml.executors import Executor, ExecutorError
from hardenml.gate import GateDecision, decide
from hardenml.gate.decision import (
    RELEASE_EVENT,
    VALIDATION_EVENT,
    ReleaseError,
    last_release,
    latest_validation,
)
from hardenml.ledger import (
    Event,
    Ledger,
    canonical_json,
    findings_state,
    latest_run,
    record_scan,
)
from hardenml.ledger.checkpoint import sign_checkpoint, signing_key_from_env
from hardenml.patch import (
    PATCH_EVENT,
    PatchError,
    PatchResult,
    lineage_for,
    make_patch,
    model_section_for,
    patch_parameters,
    policy_attacks,
    recorded_privacy,
    remedies_for,
    rewrite_model_section,
    write_artifact,
)
from hardenml.patch.chat_guards import Guard, chat_patch, guarded, read_guards, write_guards
from hardenml.records import GATE_DECIDED, GateDecided, ModelPatched, ModelReleased
from hardenml.report import write_all_reports, write_gate_report
from hardenml.report.bundle import report_files
from hardenml.report.mlflow_tracking import TrackingError, log_gate, log_scan
from hardenml.report.regulation import validate_requirements
from hardenml.scan import ScanResult, run_scan
from hardenml.scan.policy import Remedy, generic_remedy
from hardenml.scan.probes import probe_outcomes, prompt_sets_sha256, run_probe_scan
from hardenml.scan.scanner import Checkpoint, scan_shard
from hardenml.scan.shards import SHARD_QUERIES, BatchArrays, BatchShard
from hardenml.scan.stochastic import stochastic_view
from hardenml.targets import (
    ChatModel,
    Target,
    TargetError,
    file_sha256,
    is_chat_kind,
    kind_options,
    load_chat_model,
    load_target,
    model_identity,
    validate_target_config,
)
from hardenml.threats import Threat, threat_class, validate_threats
from hardenml.threats.probes.benign import BenignRequests
from hardenml.validate import Verdict, compare, evaluate
from hardenml.validate.probes import compare_probes

GATE_REPORT_NAME = "gate-report.json"
# `[scan]` keys that say where the batches run, not what they measure.
EXECUTOR_KEYS = {"executor", "scheduler", "workers"}


def _on_import_path(folder: Path) -> None:
    """Put the workspace folder on the import path, after everything installed, so that a
    `model.factory` module kept beside the config is found without PYTHONPATH and never
    shadows an installed package."""
    entry = str(folder.resolve())
    if entry not in sys.path:
        sys.path.append(entry)


@dataclass
class Workspace:
    """A config and the ledger beside it."""

    config: HardenConfig
    ledger: Ledger

    @classmethod
    def open(cls, config_path: Path | None = None, *, cwd: Path | None = None) -> Workspace:
        config = load_config(find_config(config_path, cwd))
        _on_import_path(config.root)
        validate_target_config(config)
        validate_threats(config)
        validate_requirements(config)
        return cls(config, Ledger(config.ledger_path))

    @property
    def model_path(self) -> Path:
        """The configured model file (for kinds that read one)."""
        if self.config.model.path is None:
            raise TargetError(
                f"model.kind {self.config.model.kind!r} reads no file; this command needs one"
            )
        return self.config.resolve(self.config.model.path)

    @property
    def model_file(self) -> Path | None:
        """The configured model file, or None for a kind that reads none (an endpoint)."""
        path = self.config.model.path
        return None if path is None else self.config.resolve(path)

    def model_sha256(self) -> str:
        """What names the configured model in runs and findings (see `model_identity`);
        a chat model behind guards is named by the model and its guard file together."""
        if self.is_chat:
            return chat_model_sha256(self, self.model_file)
        return model_identity(self.config.model, self.model_file)

    def load_target(self, *, trust: bool = False) -> Target:
        return self.bounded(load_target(self.config.model, self.model_file, trust=trust))

    def bounded(self, target: Target) -> Target:
        """`target` with the attack memory budget of `scan.memory_mb`, when it is set."""
        if self.config.scan.memory_mb is not None:
            target.memory_budget = int(self.config.scan.memory_mb * 2**20)
        return target

    def evaluation_data(self) -> Dataset:
        return self.datasets()[1]

    @property
    def is_chat(self) -> bool:
        """Whether the model is a chat model, scanned with prompt probes, not tensors."""
        return is_chat_kind(self.config.model)

    def evaluated_sha256(self) -> str:
        """The sha256 of what a scan evaluates: the evaluation split, or for a chat model
        the prompt files of its probes."""
        if self.is_chat:
            return prompt_sets_sha256(self.config, validate_threats(self.config))
        return self.evaluation_data().sha256

    def datasets(self) -> tuple[Dataset, Dataset]:
        """(reference, evaluation): the train split and the split the scan evaluates."""
        train, data = prepare(self.config.data, root=self.config.root)
        train = fit_to_shape(train, tuple(self.config.model.input.shape))
        data = fit_to_shape(data, tuple(self.config.model.input.shape))
        n_classes = len(self.config.model.classes)
        if int(data.y.max()) >= n_classes:
            raise DataError(
                f"the data has labels up to {int(data.y.max())} but model.classes lists "
                f"{n_classes} classes; list one name per class"
            )
        return train, data

    def scan_fingerprint(self, model_sha256: str, data_sha256: str, seed: int) -> str:
        """Identifies what a scan measured, so the gate can reuse a run that still fits."""
        threats = [t.model_dump(mode="json") for t in self.config.threats]
        body = canonical_json(
            {
                "model": model_sha256,
                "data": data_sha256,
                "seed": seed,
                "threats": threats,
                "confidence": self.config.policy.confidence,
                "scan": self.config.scan.model_dump(mode="json", exclude=EXECUTOR_KEYS),
                # A sequential scan's stopping point depends on the thresholds.
                "policy": self.config.policy.model_dump(mode="json")
                if self.config.scan.sequential
                else None,
                # Only when declared, so configs without suites keep their fingerprints.
                **(
                    {"behaviour": [s.model_dump(mode="json") for s in self.config.behaviour]}
                    if self.config.behaviour
                    else {}
                ),
                # The same: a declared rule changes every number.
                **(
                    {"stochastic": self.config.model.stochastic.model_dump(mode="json")}
                    if self.config.model.stochastic.rule is not None
                    else {}
                ),
                # The declared preprocessing is part of the model the scan measured.
                **(
                    {"preprocessing": list(self.config.model.preprocessing)}
                    if self.config.model.preprocessing
                    else {}
                ),
                # Likewise explanations: a run without them does not stand in for one with.
                **(
                    {"explain": self.config.explain.model_dump(mode="json")}
                    if self.config.explain.enabled
                    else {}
                ),
            }
        )
        return hashlib.sha256(body.encode()).hexdigest()


def prepare_threats(threats: dict[str, Threat], reference: Dataset) -> None:
    """Let each threat fit what it needs from the training split (per-feature scales of a
    tabular threat with `budget_units = "std"`) before it attacks anything."""
    rows = torch.from_numpy(reference.x)
    for threat in threats.values():
        threat.prepare(rows)


# --- a scan shard computed away from the scan: what a Dask worker runs -------------
#
# A scan shard computed away from the scan: what a Dask worker runs.
#
# The worker is sent a `WorkspaceSource` (the config file's path, `--trust`, the seed, and
# the sha256 of the model and of the evaluation data the scan saw) and a shard, never the
# model object. It opens the same workspace, loads the model with the same loader
# (`Workspace.load_target`, so `--trust` and safe loading hold on the worker too), prepares
# the same data and threats, and refuses to go on when it finds another model or other data
# than the scan did. We chose paths over shipping the weights: a pickle of the user's model
# object would run code on the workers, its state dict alone does not rebuild every kind
# (TorchScript, ONNX, scikit-learn, HTTP endpoints), and the data must be there anyway;
# the price is that remote workers need the workspace mounted at the same path.
#
# What a worker builds from a source is kept for the life of its process (`_scan_state`),
# because every shard of a scan needs the same model, data and threats, and loading them
# again per shard would cost more than many shards do.


@dataclass(frozen=True)
class WorkspaceSource:
    """What a worker needs to rebuild the scan, and what it must find when it does."""

    config_path: Path
    trust: bool
    seed: int
    model_sha256: str
    data_sha256: str

    @classmethod
    def of(cls, ws: Workspace, *, trust: bool, seed: int, data_sha256: str) -> WorkspaceSource:
        if ws.config.source is None:
            raise ExecutorError(
                "--executor dask needs the workspace's hardenml.toml on disk, so that the "
                "workers can open it; this config was built in memory"
            )
        return cls(
            config_path=Path(ws.config.source).resolve(),
            trust=trust,
            seed=seed,
            model_sha256=ws.model_sha256(),
            data_sha256=data_sha256,
        )


@dataclass(frozen=True)
class _ScanState:
    config: HardenConfig
    target: Target
    threats: dict[str, Threat]
    x: torch.Tensor
    y: torch.Tensor


@lru_cache(maxsize=2)
def _scan_state(source: WorkspaceSource) -> _ScanState:
    ws = Workspace.open(source.config_path)
    target = ws.load_target(trust=source.trust)
    reference, data = ws.datasets()
    model_sha = ws.model_sha256()
    if model_sha != source.model_sha256 or data.sha256 != source.data_sha256:
        raise ExecutorError(
            f"the worker's workspace at {source.config_path} holds another model or other "
            f"data than the scan (model {model_sha[:12]} vs {source.model_sha256[:12]}, "
            f"data {data.sha256[:12]} vs {source.data_sha256[:12]}): give every worker the "
            "same files at the same path"
        )
    threats = validate_threats(ws.config)
    prepare_threats(threats, reference)
    return _ScanState(
        ws.config, target, threats, torch.from_numpy(data.x), torch.from_numpy(data.y)
    )


def scan_shard_of(source: WorkspaceSource, shard: BatchShard) -> BatchArrays:
    """The arrays of `shard` of the scan of `source`, with the queries it sent the model."""
    state = _scan_state(source)
    # The model under its declared rule, made afresh for every shard: a stochastic model's
    # draws follow the calls its wrapper has seen, and a kept wrapper would carry them
    # from one shard (or one scan) into the next, which the local scan never does.
    target, _ = stochastic_view(state.config, state.target, state.x, seed=source.seed)
    before = target.queries
    arrays = scan_shard(
        state.config, target, state.threats, state.x, state.y, shard, seed=source.seed
    )
    arrays[SHARD_QUERIES] = np.array([target.queries - before])
    return arrays


def patch_remedy(config: HardenConfig) -> Remedy:
    """What a robustness finding proposes: the registered patches that address its threat's
    family and patch this model's kind, or a plain statement that none does."""

    def remedy(threat: Threat, budget: float) -> str:
        options = remedies_for(config.model.kind, threat.family)
        if not options:
            return (
                f"{generic_remedy(threat, budget)} No registered patch hardens a "
                f"{config.model.kind!r} model against {threat.family} threats."
            )
        how = "; or ".join(f"`hardenml patch --with {name}` ({what})" for name, what in options)
        budget_words = "" if threat.family == "corruption" else f" at budget {budget:g}"
        return f"{how}{budget_words}; then `hardenml validate` the result against this model."

    return remedy


def scan(
    ws: Workspace,
    *,
    trust: bool = False,
    seed: int | None = None,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
    max_samples: int | None = None,
    max_seconds: float | None = None,
    sequential: bool | None = None,
    executor: Executor | None = None,
) -> ScanResult:
    """Scan the configured model, record the run and its findings in the ledger.

    `executor` (started) runs the batches elsewhere, e.g. on Dask (`hardenml.executors`);
    its workers rebuild the model from this workspace (`WorkspaceSource`). The numbers are
    those of the local scan, and the run reaches the ledger once, from this process.

    Finished batches are checkpointed under the artifacts folder; the same scan run again
    after an interruption resumes from them (and says so through `log`). A ledger whose
    chain is broken is refused before any work (`LedgerTamperedError`): it would not take
    the result anyway.
    """
    _check_caps(max_samples, max_seconds)
    ws.ledger.check_writable()
    ws.ledger.verified()
    threats = validate_threats(ws.config)
    if ws.is_chat:
        return _scan_chat(ws, threats, seed=seed, progress=progress, log=log)
    target = ws.load_target(trust=trust)
    reference, data = ws.datasets()
    prepare_threats(threats, reference)
    model_sha = ws.model_sha256()
    seed = ws.config.data.seed if seed is None else seed
    fingerprint = ws.scan_fingerprint(model_sha, data.sha256, seed)
    if max_samples or max_seconds or sequential is not None:
        caps = canonical_json([max_samples, max_seconds, sequential])
        fingerprint = hashlib.sha256((fingerprint + caps).encode()).hexdigest()
    run_batches = None
    if executor is not None:
        source = WorkspaceSource.of(ws, trust=trust, seed=seed, data_sha256=data.sha256)
        run_batches = executor.batch_runner(partial(scan_shard_of, source))
    result = run_scan(
        ws.config,
        target,
        data,
        threats,
        model_sha256=model_sha,
        seed=seed,
        progress=progress,
        fingerprint=fingerprint,
        log=log,
        max_samples=max_samples,
        max_seconds=max_seconds,
        sequential=sequential,
        reference=reference,
        remedy=patch_remedy(ws.config),
        run_batches=run_batches,
    )
    recorded = record_scan(ws.ledger, ws.config, result)
    Checkpoint(ws.config.artifacts_dir / "checkpoints" / fingerprint[:16]).clear()
    if ws.config.mlflow.enabled:
        _track(lambda: log_scan(ws.config, recorded[0].payload), log)
    return result


def _scan_chat(
    ws: Workspace,
    threats: dict[str, Threat],
    *,
    seed: int | None,
    progress: Progress | None,
    log: Callable[[str], None] | None,
) -> ScanResult:
    """A chat model's scan: its prompt probes, recorded like any scan (no checkpoints: a
    probe run is a few dozen conversations)."""
    model_sha = ws.model_sha256()
    seed = ws.config.seed if seed is None else seed
    result = run_probe_scan(
        ws.config,
        chat_model(ws, ws.model_file),
        threats,
        model_sha256=model_sha,
        seed=seed,
        progress=progress,
        log=log,
        fingerprint=ws.scan_fingerprint(model_sha, ws.evaluated_sha256(), seed),
    )
    record_scan(ws.ledger, ws.config, result)
    return result


def _why_no_run(runs: list[Event], model_sha: str) -> str:
    """Why no recorded run fits, in words, for the gate's note that it scans."""
    same_model = [e for e in runs if e.payload.get("model_sha256") == model_sha]
    if not runs:
        return "the ledger records no scan yet"
    if not same_model:
        return f"no scan of this model file (sha256 {model_sha[:12]}) is recorded"
    last = same_model[-1].payload.get("run_id")
    return (
        f"the threats, data, seed or scan settings changed since run {last} of this model, "
        "so its numbers no longer answer this config"
    )


def _record_loosening(ws: Workspace, decision: GateDecision) -> None:
    """A `policy.loosened` event, once per distinct loosening since the release."""
    released = decision.released
    since = 0 if released is None else released.ledger_seq
    earlier = [
        e
        for e in ws.ledger.events([POLICY_LOOSENED])
        if e.seq > since and e.payload.get("changes") == decision.loosened
    ]
    if earlier:
        return
    ws.ledger.append(
        POLICY_LOOSENED,
        {
            "model": ws.config.model.name,
            "released_sha256": None if released is None else released.model_sha256,
            "changes": decision.loosened,
            "run_id": decision.run.run_id,
        },
    )


POLICY_LOOSENED = "policy.loosened"


def _check_caps(max_samples: int | None, max_seconds: float | None) -> None:
    """The caps a caller (`--max-samples`, `--max-seconds`) put on a scan, checked the way
    the config checks `scan.max_samples` and `scan.max_seconds`."""
    problems = []
    if max_samples is not None and (isinstance(max_samples, bool) or max_samples < 1):
        problems.append(
            ConfigProblem(
                "max_samples (--max-samples)",
                max_samples,
                "a positive number of samples; leave it out to evaluate every sample",
            )
        )
    if max_seconds is not None and not (math.isfinite(max_seconds) and max_seconds > 0):
        problems.append(
            ConfigProblem(
                "max_seconds (--max-seconds)",
                max_seconds,
                "a positive, finite number of seconds; leave it out for no time limit",
            )
        )
    if problems:
        raise ConfigError(None, problems)


def _track(action: Callable[[], str], log: Callable[[str], None] | None) -> None:
    """Log to MLflow; a failure is reported, never allowed to change a scan or a verdict."""
    try:
        run_id = action()
    except TrackingError as exc:
        (log or (lambda message: None))(f"mlflow: {exc}")
        return
    (log or (lambda message: None))(f"mlflow: logged to run {run_id}")


def gate(
    ws: Workspace,
    *,
    trust: bool = False,
    rescan: bool = False,
    progress: Progress | None = None,
    report_path: Path | None = None,
    log: Callable[[str], None] | None = None,
    executor: Executor | None = None,
) -> GateDecision:
    """Decide the release: reuse the latest matching scan (or scan now), apply the policy,
    record the decision and write the JSON report next to the ledger.

    Everything it decides on comes from one verified read of the ledger; a broken hash
    chain raises `LedgerTamperedError` before any scan or decision, and the report records
    the chain head the decision read. With $HARDENML_LEDGER_KEY set, every report also
    carries a signed checkpoint of that chain; without it, they say what that leaves open.
    """
    ws.ledger.check_writable()
    # Loaded before any scan: a configured key that does not load is a usage error, found
    # before minutes of scanning rather than after.
    signing_key = signing_key_from_env()
    events, head = ws.ledger.verified()
    try:
        model_sha = ws.model_sha256()
    except TargetError:
        model_sha = ""
    say = log or (lambda message: None)
    run = None
    if not rescan and model_sha:
        wanted = ws.scan_fingerprint(model_sha, ws.evaluated_sha256(), ws.config.seed)
        run = latest_run(events, config_fingerprint=wanted)
        if run is None:
            say(f"gate: scanning now, because {_why_no_run(events, model_sha)}")
    elif rescan:
        say("gate: scanning now, because --rescan was given")
    if run is None:
        scan(ws, trust=trust, progress=progress, log=log, executor=executor)
        events, head = ws.ledger.verified()
        run = latest_run(events)
    assert run is not None
    # The findings as this run left them (with every review since): the verdict and the
    # reports describe one run, not a mix with later scans of other files.
    findings = findings_state(events, as_of_run=run.run_id)
    decision = decide(
        ws.config,
        run,
        findings,
        validation=latest_validation(events, run.model_sha256),
        released=last_release(events, run.model),
        ledger_head=head,
        # The very events the decision read, verified above: the checkpoint vouches for
        # nothing the gate did not see.
        ledger_checkpoint=None if signing_key is None else sign_checkpoint(events, signing_key),
        privacy=recorded_privacy(events, run.model_sha256),
    )
    path = report_path or ws.config.ledger_path.parent / GATE_REPORT_NAME
    write_gate_report(path, ws.config, decision)
    written = write_all_reports(
        ws.config.reports_dir, ws.config, decision, findings=findings, ledger_events=events
    )
    ws.ledger.append(
        GATE_DECIDED,
        GateDecided(
            run_id=run.run_id,
            model=run.model,
            model_sha256=run.model_sha256,
            status="pass" if decision.passed else "fail",
            exit_code=decision.exit_code,
            reasons=decision.reasons,
            checks=[c.as_dict() for c in decision.checks],
            blocking_findings=[f.finding_id for f in decision.blocking_findings],
            extra_checks=[c.as_dict() for c in decision.extra_checks],
            report=str(path),
            extra={"ledger_head": head.as_dict()},
        ).to_payload(),
    )
    if decision.loosened:
        say("gate: the policy is looser than at the last release: " + "; ".join(decision.loosened))
        _record_loosening(ws, decision)
    if ws.config.mlflow.enabled:
        files = [path, *written.values()]
        _track(lambda: log_gate(ws.config, decision, files), log)
    return decision


def withdraw_reports(
    config_path: Path | None = None,
    report_path: Path | None = None,
    *,
    cwd: Path | None = None,
) -> list[Path]:
    """Remove the reports of the previous gate decision, when the gate could not decide:
    a PASS left in place by an earlier run must never be read as this run's result. Returns
    the files removed.

    The folders come from the config even when it does not validate (its `[reports] dir`
    and `[ledger] path`, read as plain TOML where possible, else the defaults); a config
    that cannot be found leaves only an explicit `report_path` to remove.
    """
    candidates = [report_path] if report_path is not None else []
    try:
        source = find_config(config_path, cwd)
    except ConfigError:
        source = None
    if source is not None:
        reports_dir, ledger_dir = _report_folders(source)
        candidates += report_files(reports_dir)
        if report_path is None:
            candidates.append(ledger_dir / GATE_REPORT_NAME)
    removed = []
    for path in candidates:
        if path.is_file():
            path.unlink()
            removed.append(path)
    return removed


def _report_folders(source: Path) -> tuple[Path, Path]:
    """(reports folder, ledger's folder) of the config at `source`, valid or not."""
    try:
        config = load_config(source)
        return config.reports_dir, config.ledger_path.parent
    except ConfigError:
        pass
    root = source.resolve().parent
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError):
        raw = {}

    def string_at(table: str, key: str, default: Path) -> Path:
        section = raw.get(table)
        value = section.get(key) if isinstance(section, dict) else None
        return Path(value) if isinstance(value, str) else default

    folder = string_at("reports", "dir", ReportsConfig().dir)
    db = string_at("ledger", "path", LedgerConfig().path)
    return root / folder, (root / db).parent


# --- patch, validate, promote, release (the second half of the loop) -------------------

PATCHED_MODELS_DIR = "models"


@dataclass
class PatchOutcome:
    """A patched model written as an artifact, and its lineage event in the ledger."""

    patch: str
    artifact: Path
    sha256: str
    parent_sha256: str
    result: PatchResult
    event: Event
    # The held-out threats the patch never trained on (`[[threats]] held_out = true`).
    held_out: list[str] = field(default_factory=list)


def _shown_path(ws: Workspace, path: Path) -> str:
    """`path` relative to the config's folder where it lies inside it (portable ledgers)."""
    try:
        return path.resolve().relative_to(ws.config.root.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def _model_file(ws: Workspace, path: Path | str | None, events: list[Event]) -> Path:
    """A model file the user named: None is the configured model, "released" the last
    released one; other paths are taken as given (relative to the working directory)."""
    if path is None:
        return ws.model_path
    if str(path) == "released":
        released = last_release(events, ws.config.model.name)
        if released is None:
            raise PatchError(f"no release of {ws.config.model.name!r} is recorded in the ledger")
        return ws.config.resolve(Path(released.path))
    return Path(path)


def load_model_file(
    ws: Workspace, path: Path, *, events: list[Event] | None = None, trust: bool = False
) -> tuple[Target, str, ModelConfig]:
    """Load any model file of this workspace: as its lineage event says it was built, else
    like the configured model. Returns (target, sha256, model section)."""
    if not path.is_file():
        raise TargetError(f"model file {path} does not exist")
    sha = file_sha256(path)
    events = ws.ledger.events() if events is None else events
    section = model_section_for(events, ws.config.model, path, sha)
    return ws.bounded(load_target(section, path, trust=trust)), sha, section


def _training_budget(config: HardenConfig) -> float | None:
    """The largest L-inf budget the policy requires robustness at, if any, over the threats
    that are not held out (a patch never trains at a held-out threat's budget)."""
    budgets = [
        req.budget
        for req in config.policy.robust
        for t in config.threats
        if t.name == req.threat and not t.held_out and threat_class(t.attack).norm == "linf"
    ]
    return max(budgets) if budgets else None


def patch(
    ws: Workspace,
    name: str,
    *,
    params: dict[str, Any] | None = None,
    model_path: Path | str | None = None,
    seed: int = 0,
    trust: bool = False,
    progress: Progress | None = None,
    recorded_params: dict[str, Any] | None = None,
) -> PatchOutcome:
    """Apply the registered patch `name` to a model (default: the configured one; "released":
    the last release), write the new artifact and record its lineage. `recorded_params`
    replace values of the patch's parameters in the lineage event (a workspace-relative
    path where the patch was handed an absolute one)."""
    params = dict(params or {})
    if params.get("eps") is None and "eps" in patch_parameters(name):
        params.pop("eps", None)
        budget = _training_budget(ws.config)
        if budget is not None:
            params["eps"] = budget
    defence = make_patch(name, params)
    ws.ledger.check_writable()
    if ws.config.data.split != "test":
        raise PatchError(
            f"patches train on the train split, but data.split = {ws.config.data.split!r} "
            "evaluates on it too (leakage); set data.split = 'test'"
        )
    events = ws.ledger.events()
    source = _model_file(ws, model_path, events)
    target, parent_sha, parent = load_model_file(ws, source, events=events, trust=trust)
    train, _ = prepare(ws.config.data, root=ws.config.root)
    train = fit_to_shape(train, tuple(ws.config.model.input.shape))
    started = datetime.now(UTC).isoformat(timespec="seconds")
    clock = time.perf_counter()
    attacks = policy_attacks(ws.config, validate_threats(ws.config))
    result = defence(
        target,
        parent,
        train,
        seed=seed,
        progress=progress,
        attacks=attacks,
        held_out=ws.config.held_out_threats,
    )
    seconds = time.perf_counter() - clock
    stem = f"{ws.config.model.name}-{name}"
    folder = ws.config.artifacts_dir / PATCHED_MODELS_DIR
    path, sha = write_artifact(result, parent.kind, folder, stem)
    model = {
        "kind": parent.kind,
        "factory": result.factory or parent.factory,
        "factory_kwargs": result.factory_kwargs if result.factory else parent.factory_kwargs,
        "path": _shown_path(ws, path),
    }
    payload = ModelPatched(
        patch=name,
        params={**defence.params(), **(recorded_params or {})},
        seed=seed,
        model=model,
        model_name=ws.config.model.name,
        artifact=_shown_path(ws, path),
        artifact_sha256=sha,
        parent=_shown_path(ws, source),
        parent_sha256=parent_sha,
        data_sha256=train.sha256,
        extra={
            "data_provenance": train.provenance,
            "metrics": result.metrics,
            "history": result.history,
            "events": result.events,
            "started": started,
            "seconds": round(seconds, 3),
            "held_out": ws.config.held_out_threats,
        },
    )
    event = ws.ledger.append(PATCH_EVENT, payload.to_payload())
    return PatchOutcome(name, path, sha, parent_sha, result, event, ws.config.held_out_threats)


def retrain(
    ws: Workspace,
    *,
    seed: int = 0,
    trust: bool = False,
    progress: Progress | None = None,
) -> PatchOutcome:
    """Fine-tune the last released model (else the configured one) with `l2sp_finetune` on
    clean data, fresh adversarial examples and the replay buffer: a candidate artifact and
    its lineage event, as `patch` writes them. It never promotes: `validate` and `gate` do."""
    events = ws.ledger.events()
    return patch(
        ws,
        RETRAIN_PATCH,
        params=retrain_params(ws.config, events),
        model_path=retrain_source(ws.config, events),
        seed=seed,
        trust=trust,
        progress=progress,
        recorded_params=lineage_params(ws.config, events),
    )


def without_replayed(
    ws: Workspace, data: Dataset, events: list[Event], model_sha256s: list[str]
) -> tuple[Dataset, dict[str, Any] | None]:
    """`data` without the evaluation rows that replay rows any of these models (or their
    lineage) trained on were crafted from, and what was left out (None: no model was
    trained on a replay buffer)."""
    try:
        replayed = replayed_source_ids(ws.config, events, model_sha256s)
    except ReplayError as exc:
        raise DataError(
            f"cannot tell which evaluation rows the models were trained on through the "
            f"replay buffer: {exc}"
        ) from None
    if not replayed.buffers:
        return data, None
    seen = np.isin(row_ids(data.x), list(replayed.ids))
    excluded = {
        "rows": int(seen.sum()),
        "of": len(data),
        "buffers": list(replayed.buffers),
        "replay_rows_without_id": replayed.without_id,
    }
    if seen.all():
        raise DataError(
            f"every one of the {len(data)} evaluation rows was replayed into the models' "
            "training: validate on a fresh split (data.seed) or more data"
        )
    if not seen.any():
        return data, excluded
    return data.take(np.flatnonzero(~seen), replay_excluded=int(seen.sum())), excluded


def redteam(
    ws: Workspace,
    *,
    seed: int = 0,
    trust: bool = False,
    progress: Progress | None = None,
    max_seconds: float | None = None,
) -> RedteamResult:
    """Run every registered threat that applies to the configured model, with drawn effort,
    at every budget of the threat model (`hardenml.continuous.redteam`); record the run and
    the findings the ledger did not hold yet. `max_seconds` (default `[redteam]
    max_seconds`) stops starting new batches; what was covered is recorded."""
    if ws.is_chat:
        raise TargetError(
            "hardenml redteam runs input-space threats; a chat model's probes run in "
            "`hardenml scan`"
        )
    ws.ledger.check_writable()
    ws.ledger.verified()
    declared = validate_threats(ws.config)
    target = ws.load_target(trust=trust)
    reference, data = ws.datasets()
    result = run_redteam(
        ws.config,
        target,
        data,
        model_sha256=ws.model_sha256(),
        declared=declared,
        seed=seed,
        reference=reference,
        progress=progress,
        max_seconds=max_seconds,
        remedy=patch_remedy(ws.config),
    )
    return record_redteam(ws.ledger, ws.config, result)


def validate(
    ws: Workspace,
    baseline: Path | str,
    candidate: Path | str,
    *,
    seed: int | None = None,
    trust: bool = False,
    progress: Progress | None = None,
    promote: bool = False,
) -> Verdict:
    """Compare `candidate` with `baseline` on the same samples and seeds, record the verdict;
    with `promote`, a passing candidate becomes the configured model."""
    if ws.is_chat:
        return _validate_chat(
            ws, baseline, candidate, seed=seed, progress=progress, promote=promote
        )
    ws.ledger.check_writable()
    events = ws.ledger.events()
    base_path = _model_file(ws, baseline, events)
    cand_path = _model_file(ws, candidate, events)
    base_target, base_sha, _ = load_model_file(ws, base_path, events=events, trust=trust)
    cand_target, cand_sha, _ = load_model_file(ws, cand_path, events=events, trust=trust)
    threats = validate_threats(ws.config)
    reference, data = ws.datasets()
    # Rows a model was trained on through the replay buffer would flatter it: left out.
    data, replay_excluded = without_replayed(ws, data, events, [base_sha, cand_sha])
    prepare_threats(threats, reference)
    seed = ws.config.data.seed if seed is None else seed
    base = evaluate(
        ws.config, base_target, data, threats, seed=seed, progress=progress, label="baseline: "
    )
    cand = evaluate(
        ws.config, cand_target, data, threats, seed=seed, progress=progress, label="candidate: "
    )
    # Only the accuracy checks the validator re-measures (slice, integrity and behaviour
    # findings carry other metrics and must not read as a fixed clean-accuracy finding).
    fixed = {
        "clean_accuracy" if f.threat is None else f"robust_accuracy[{f.threat}@{f.budget:g}]"
        for f in findings_state(events).values()
        if f.status == "fixed"
        and f.model == ws.config.model.name
        and f.metric in ("clean_accuracy", "robust_accuracy")
    }
    verdict = compare(ws.config, base, cand, data.y, seed=seed, fixed_checks=fixed)
    verdict.baseline_sha256, verdict.candidate_sha256 = base_sha, cand_sha
    verdict.data_sha256 = data.sha256
    verdict.extra = {
        "model": ws.config.model.name,
        "baseline": _shown_path(ws, base_path),
        "candidate": _shown_path(ws, cand_path),
        "replay_excluded": replay_excluded,
        "behaviour": {
            "baseline": [r.as_dict() for r in base.behaviour],
            "candidate": [r.as_dict() for r in cand.behaviour],
        },
    }
    ws.ledger.append(VALIDATION_EVENT, verdict.as_dict())
    if promote and verdict.passed:
        promote_model(ws, cand_path)
    return verdict


# --- chat models: guards as patches, validated by rerunning the probes -----------------


def chat_model_sha256(ws: Workspace, guards: Path | None) -> str:
    """The chat endpoint's identity, with the guard file's sha256 where one is given."""
    identity = model_identity(ws.config.model, None)
    if guards is None:
        return identity
    if not guards.is_file():
        raise TargetError(f"guard file {guards} does not exist (model.path or the argument)")
    return hashlib.sha256(f"{identity}:{file_sha256(guards)}".encode()).hexdigest()


def chat_model(ws: Workspace, guards: Path | None) -> ChatModel:
    """The configured chat model, behind the guards the file `guards` lists (if any)."""
    model = load_chat_model(ws.config.model)
    return model if guards is None else guarded(model, read_guards(guards))


def _chat_source(ws: Workspace, source: Path | str | None, events: list[Event]) -> Path | None:
    """A chat model the user named: None or "configured" is the configured model (behind
    its guard file, if model.path names one), "released" the last release, else a guard
    file."""
    if source is None or str(source) == "configured":
        return ws.model_file
    if str(source) == "released":
        released = last_release(events, ws.config.model.name)
        if released is None:
            raise PatchError(f"no release of {ws.config.model.name!r} is recorded in the ledger")
        return ws.config.resolve(Path(released.path)) if released.path else None
    path = Path(source)
    if not path.is_file():
        raise PatchError(f"guard file {path} does not exist; pass a file `hardenml patch` wrote")
    return path


@dataclass
class ChatPatchOutcome:
    """A chat model's guard file and its lineage event in the ledger."""

    patch: str
    artifact: Path
    sha256: str
    parent_sha256: str
    guards: list[Guard]
    event: Event


def patch_chat(
    ws: Workspace,
    name: str,
    *,
    params: dict[str, Any] | None = None,
    model_path: Path | str | None = None,
) -> ChatPatchOutcome:
    """Put the chat patch `name` in front of a chat model (default: the configured one):
    write the new guard file and record its lineage."""
    defence = chat_patch(name, params)
    ws.ledger.check_writable()
    events = ws.ledger.events()
    source = _chat_source(ws, model_path, events)
    parent = [] if source is None else read_guards(source)
    guards = [*parent, Guard(name, defence.params())]
    folder = ws.config.artifacts_dir / PATCHED_MODELS_DIR
    path, sha = write_guards(folder, f"{ws.config.model.name}-{name}", guards)
    parent_sha = chat_model_sha256(ws, source)
    # `data_sha256` is what the probes read, as a tensor patch's is its train split.
    payload = ModelPatched(
        patch=name,
        params=defence.params(),
        seed=0,
        model={"kind": ws.config.model.kind, "factory": None, "factory_kwargs": {}},
        model_name=ws.config.model.name,
        artifact=_shown_path(ws, path),
        artifact_sha256=sha,
        parent="configured" if source is None else _shown_path(ws, source),
        parent_sha256=parent_sha,
        data_sha256=ws.evaluated_sha256(),
        extra={
            "model_sha256": chat_model_sha256(ws, path),
            "guards": [asdict(g) for g in guards],
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": 0.0,
        },
    ).to_payload()
    event = ws.ledger.append(PATCH_EVENT, payload)
    return ChatPatchOutcome(name, path, sha, parent_sha, guards, event)


def _validate_chat(
    ws: Workspace,
    baseline: Path | str,
    candidate: Path | str,
    *,
    seed: int | None,
    progress: Progress | None,
    promote: bool,
    log: Callable[[str], None] | None = None,
) -> Verdict:
    """Rerun the probes against both chat models with the same seed and compare them."""
    ws.ledger.check_writable()
    events = ws.ledger.events()
    base_path = _chat_source(ws, baseline, events)
    cand_path = _chat_source(ws, candidate, events)
    threats = validate_threats(ws.config)
    seed = ws.config.seed if seed is None else seed
    outcomes = [
        probe_outcomes(
            ws.config,
            chat_model(ws, path),
            threats,
            seed=seed,
            progress=progress,
            log=log,
            label=label,
        )
        for path, label in ((base_path, "baseline: "), (cand_path, "candidate: "))
    ]
    benign = BenignRequests()
    answered = tuple(
        benign.probe(chat_model(ws, path), budget=1, seed=seed, root=ws.config.root)
        for path in (base_path, cand_path)
    )
    verdict = compare_probes(
        ws.config, outcomes[0], outcomes[1], seed=seed, benign=(answered[0], answered[1])
    )
    verdict.baseline_sha256 = chat_model_sha256(ws, base_path)
    verdict.candidate_sha256 = chat_model_sha256(ws, cand_path)
    verdict.data_sha256 = ws.evaluated_sha256()
    verdict.extra |= {
        "model": ws.config.model.name,
        "baseline": "configured" if base_path is None else _shown_path(ws, base_path),
        "candidate": "configured" if cand_path is None else _shown_path(ws, cand_path),
    }
    ws.ledger.append(VALIDATION_EVENT, verdict.as_dict())
    if promote and verdict.passed and cand_path is not None:
        promote_model(ws, cand_path)
    return verdict


def promote_model(ws: Workspace, path: Path) -> Path:
    """Point the config's `[model]` at `path` (and at the factory its lineage records), so
    that scans and the gate judge it from now on. Returns the config file."""
    if ws.config.source is None:
        raise PatchError("the workspace has no config file to update")
    section = model_section_for(ws.ledger.events(), ws.config.model, path, file_sha256(path))
    updates: dict[str, Any] = {"path": _shown_path(ws, path)}
    if section.factory != ws.config.model.factory:
        updates["factory"] = section.factory
    if section.factory_kwargs != ws.config.model.factory_kwargs:
        updates["factory_kwargs"] = section.factory_kwargs
    text = ws.config.source.read_text(encoding="utf-8")
    ws.config.source.write_text(rewrite_model_section(text, updates), encoding="utf-8")
    return ws.config.source


@dataclass(frozen=True)
class _Releasable:
    """What a release names: the file to record, the identity gate decisions and runs
    carry, its lineage, and for a chat model what that identity is made of."""

    shown: str
    name: str
    sha256: str
    lineage: ModelPatched | None
    chat: dict[str, Any] | None = None


def _releasable_file(ws: Workspace, model_path: Path | None) -> _Releasable:
    path = model_path or ws.model_path
    if not path.is_file():
        raise TargetError(f"model file {path} does not exist")
    sha = file_sha256(path)
    return _Releasable(_shown_path(ws, path), path.name, sha, lineage_for(ws.ledger.events(), sha))


def _releasable_chat(ws: Workspace, model_path: Path | None, events: list[Event]) -> _Releasable:
    """A chat model as gated: the endpoint (its identity, never its token) behind the guard
    file `model_path` names, else behind the configured one (model.path), else bare."""
    guards = _chat_source(ws, model_path, events)
    endpoint = model_identity(ws.config.model, None)
    options = kind_options(ws.config.model)  # a ChatKind's options: ChatOptions
    chat: dict[str, Any] = {
        "endpoint_sha256": endpoint,
        "base_url": getattr(options, "base_url", None),
        "served_model": getattr(options, "model", None),
        "guards_sha256": None,
        "guards": [],
    }
    if guards is None:
        return _Releasable("", "the configured chat endpoint", endpoint, None, chat)
    guard_sha = file_sha256(guards)
    chat |= {"guards_sha256": guard_sha, "guards": [asdict(g) for g in read_guards(guards)]}
    return _Releasable(
        _shown_path(ws, guards),
        guards.name,
        chat_model_sha256(ws, guards),
        lineage_for(events, guard_sha),
        chat,
    )


def release(ws: Workspace, model_path: Path | None = None, *, force: bool = False) -> Event:
    """Record a model (default: the configured one) as released. It needs a passing gate
    decision for exactly this file, unless `force`, which the event records.

    A chat model is released as it is gated: its endpoint behind its guard file (the
    configured one, or `model_path`), named by the identity of both together."""
    events = ws.ledger.events()
    if ws.is_chat:
        releasable = _releasable_chat(ws, model_path, events)
    else:
        releasable = _releasable_file(ws, model_path)
    sha = releasable.sha256
    decided = [
        (e.seq, GateDecided.from_payload(e.payload)) for e in events if e.kind == GATE_DECIDED
    ]
    last = next(((seq, d) for seq, d in reversed(decided) if d.model_sha256 == sha), None)
    decided_seq = None if last is None else last[0]
    passed = last is not None and last[1].status == "pass"
    if not passed and not force:
        state = "no gate decision" if last is None else "a failing gate decision"
        raise ReleaseError(
            f"{releasable.name} (sha256 {sha[:12]}) has {state}; run `hardenml gate` until it "
            "passes (or pass --force, which the ledger records)"
        )
    run = latest_run(events, model_sha256=sha)
    lineage = releasable.lineage
    released = ModelReleased(
        model=ws.config.model.name,
        model_sha256=sha,
        path=releasable.shown,
        gate_seq=decided_seq,
        forced=not passed,
        run_id=None if run is None else run.run_id,
        data_sha256=None if run is None else run.completed.data_sha256,
        measurements=[] if run is None else [m.as_dict() for m in run.completed.measurements],
        parent_sha256=None if lineage is None else lineage.parent_sha256,
        patch=None if lineage is None else lineage.patch,
        # So that a later gate can say when the policy was loosened since this release.
        policy=ws.config.policy.model_dump(mode="json"),
        chat=releasable.chat,
    )
    return ws.ledger.append(RELEASE_EVENT, released.to_payload())
