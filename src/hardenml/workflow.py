"""The library API behind every CLI command: open a workspace, scan, gate.

The CLI parses arguments, calls these and prints; a Python user calls the same.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from hardenml.config import HardenConfig, find_config, load_config
from hardenml.data import DataError, Dataset, fit_to_shape, prepare
from hardenml.gate import GateDecision, decide
from hardenml.ledger import Ledger, canonical_json, findings_state, latest_run, record_scan
from hardenml.report import write_gate_report
from hardenml.scan import Progress, ScanResult, run_scan
from hardenml.targets import Target, file_sha256, load_target
from hardenml.threats import validate_threats

GATE_REPORT_NAME = "gate-report.json"


@dataclass
class Workspace:
    """A config and the ledger beside it."""

    config: HardenConfig
    ledger: Ledger

    @classmethod
    def open(cls, config_path: Path | None = None, *, cwd: Path | None = None) -> Workspace:
        config = load_config(find_config(config_path, cwd))
        validate_threats(config)
        return cls(config, Ledger(config.ledger_path))

    @property
    def model_path(self) -> Path:
        return self.config.resolve(self.config.model.path)

    def load_target(self, *, trust: bool = False) -> Target:
        return load_target(self.config.model, self.model_path, trust=trust)

    def evaluation_data(self) -> Dataset:
        _, data = prepare(self.config.data, root=self.config.root)
        data = fit_to_shape(data, tuple(self.config.model.input.shape))
        n_classes = len(self.config.model.classes)
        if int(data.y.max()) >= n_classes:
            raise DataError(
                f"the data has labels up to {int(data.y.max())} but model.classes lists "
                f"{n_classes} classes; list one name per class"
            )
        return data

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
            }
        )
        return hashlib.sha256(body.encode()).hexdigest()


def scan(
    ws: Workspace, *, trust: bool = False, seed: int | None = None, progress: Progress | None = None
) -> ScanResult:
    """Scan the configured model, record the run and its findings in the ledger."""
    threats = validate_threats(ws.config)
    target = ws.load_target(trust=trust)
    data = ws.evaluation_data()
    model_sha = file_sha256(ws.model_path)
    result = run_scan(
        ws.config, target, data, threats, model_sha256=model_sha, seed=seed, progress=progress
    )
    result.scan_fingerprint = ws.scan_fingerprint(model_sha, result.data_sha256, result.seed)
    record_scan(ws.ledger, ws.config, result)
    return result


def gate(
    ws: Workspace,
    *,
    trust: bool = False,
    rescan: bool = False,
    progress: Progress | None = None,
    report_path: Path | None = None,
) -> GateDecision:
    """Decide the release: reuse the latest matching scan (or scan now), apply the policy,
    record the decision and write the JSON report next to the ledger."""
    model_sha = file_sha256(ws.model_path) if ws.model_path.is_file() else ""
    run = None
    if not rescan and model_sha:
        data = ws.evaluation_data()
        wanted = ws.scan_fingerprint(model_sha, data.sha256, ws.config.data.seed)
        run = latest_run(ws.ledger.events(["run.completed"]), config_fingerprint=wanted)
    if run is None:
        scan(ws, trust=trust, progress=progress)
        run = latest_run(ws.ledger.events(["run.completed"]))
    assert run is not None
    decision = decide(ws.config, run, findings_state(ws.ledger.events()))
    path = report_path or ws.config.ledger_path.parent / GATE_REPORT_NAME
    write_gate_report(path, ws.config, decision)
    ws.ledger.append(
        "gate.decided",
        {
            "run_id": run.run_id,
            "model": run.model,
            "model_sha256": run.model_sha256,
            "status": decision.status,
            "exit_code": decision.exit_code,
            "reasons": decision.reasons,
            "checks": [c.as_dict() for c in decision.checks],
            "blocking_findings": [f.finding_id for f in decision.blocking_findings],
            "report": str(path),
        },
    )
    return decision
