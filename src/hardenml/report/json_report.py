"""The gate's JSON report. Schema documented in docs/gate-report.md; bump the version
on any change a reader would notice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hardenml._version import __version__
from hardenml.config import HardenConfig
from hardenml.gate import GateDecision
from hardenml.ledger.checkpoint import REPORT_KEY
from hardenml.report.common import anchor_note, atomic_write, json_safe

GATE_REPORT_SCHEMA_VERSION = "1.3"


def gate_report(config: HardenConfig, decision: GateDecision) -> dict[str, Any]:
    run = decision.run.payload
    head = decision.ledger_head
    return {
        "schema_version": GATE_REPORT_SCHEMA_VERSION,
        "tool": {"name": "hardenml", "version": __version__},
        "project": config.project.name,
        "model": {
            "name": run["model"],
            "sha256": run["model_sha256"],
            # Runs recorded before the randomness check have none.
            "stochastic": run.get("stochastic"),
        },
        "decision": {
            "status": decision.status,
            "exit_code": decision.exit_code,
            "decided_at": decision.decided_at,
            "reasons": decision.reasons,
        },
        "run": {
            "run_id": run["run_id"],
            "seed": run["seed"],
            "n": run["n"],
            "data_sha256": run["data_sha256"],
            "started": run["started"],
            "finished": run["finished"],
            "ledger_seq": decision.run.seq,
        },
        # The verified chain the gate decided on (null only for a decision made in code
        # without a ledger read).
        "ledger": None if head is None else head.as_dict(),
        # That chain, signed with a key kept outside the workspace (`hardenml ledger verify
        # --checkpoint gate-report.json` reads it from here), or null, and in words either way.
        REPORT_KEY: decision.ledger_checkpoint,
        "ledger_anchor": anchor_note(decision),
        # The differential-privacy guarantee of the model's training (dp_sgd), or null.
        "privacy": decision.privacy,
        "checks": [c.as_dict() for c in decision.checks],
        "measurements": run["measurements"],
        "behaviour": run.get("behaviour", []),
        "blocking_findings": [
            {
                "finding_id": f.finding_id,
                "severity": f.severity,
                "title": f.title,
                "owner": f.owner,
                "due": f.due,
                "status": f.status,
                "taxonomy": f.taxonomy,
            }
            for f in decision.blocking_findings
        ],
    }


def gate_report_json(config: HardenConfig, decision: GateDecision) -> str:
    """The gate report as strict JSON text: NaN (a metric over zero samples) is not JSON,
    so strict readers get null instead."""
    report = json_safe(gate_report(config, decision))
    return json.dumps(report, indent=2, allow_nan=False) + "\n"


def write_gate_report(path: Path, config: HardenConfig, decision: GateDecision) -> Path:
    return atomic_write(path, gate_report_json(config, decision))
