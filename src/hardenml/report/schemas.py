"""JSON Schemas of what hardenml reads and writes: `hardenml.toml`, `gate-report.json` and
the prompt submissions `hardenml intake` takes for chat models.

Both are generated from pydantic models: the config's from `HardenConfig` (the model that
validates the file), the gate report's from the models below, which describe what
`json_report.gate_report` writes (docs/gate-report.md). `hardenml schema --out docs/schemas`
writes them; a test regenerates them and compares with the checked-in copies, and
validates real configs and gate reports against them. Draft 2020-12, as pydantic emits.

Every object of the gate report allows keys it does not list: a MINOR version adds keys,
and readers must ignore those they do not know (docs/gate-report.md, "Versioning").
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hardenml.config import HardenConfig
from hardenml.report.json_report import GATE_REPORT_SCHEMA_VERSION
from hardenml.scan.prompt_intake import PROMPT_SUBMISSION_SCHEMA

DIALECT = "https://json-schema.org/draft/2020-12/schema"
CONFIG_SCHEMA_FILE = "hardenml.toml.schema.json"
GATE_REPORT_SCHEMA_FILE = "gate-report.schema.json"
PROMPT_SUBMISSION_SCHEMA_FILE = "prompt-submission.schema.json"
# Fields of HardenConfig that the loader fills in, never the file.
_LOADER_FIELDS = ("root", "key_lines", "source")

Number = float | None  # null where the value is not finite


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ToolRecord(_Open):
    name: Literal["hardenml"]
    version: str


class StochasticRecord(_Open):
    """What the scan's randomness probe found and the rule the model was evaluated under."""

    checked: bool
    stochastic: bool
    reproducible: bool
    max_change: Number
    n: int
    rule: Literal["mean", "vote"] | None
    samples: int | None
    eot_samples: int | None


class ModelRecord(_Open):
    name: str = Field(description="the scanned model's name (`model.name`)")
    sha256: str = Field(description="what identifies the scanned model (its file's sha256)")
    stochastic: StochasticRecord | None = Field(
        description="null for runs recorded before hardenml checked"
    )


class LedgerHeadRecord(_Open):
    """The verified chain the gate decided on."""

    events: int = Field(ge=0, description="events the ledger held when the gate read it")
    head_hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the last of them")


class DecisionRecord(_Open):
    status: Literal["pass", "fail"]
    exit_code: Literal[0, 1] = Field(description="0 pass, 1 fail; a usage error writes none")
    decided_at: str = Field(description="ISO 8601 time with a UTC offset")
    reasons: list[str] = Field(description="why it failed, one line each; empty on a pass")


class RunRecordJson(_Open):
    run_id: str
    seed: int
    n: int
    data_sha256: str
    started: str
    finished: str
    ledger_seq: int = Field(description="sequence number of the run's `run.completed` event")


class CheckRecord(_Open):
    name: str
    metric: str
    threat: str | None
    budget: float | None
    threshold: float
    passed: bool
    decision: Literal["pass", "fail", "undecided"]
    mode: Literal["point", "sequential"]
    value: Number
    ci: list[Number] | None = Field(min_length=2, max_length=2)
    anytime_ci: list[Number] | None = Field(min_length=2, max_length=2)
    settled: bool | None
    n: int | None
    threat_model: str | None = Field(
        description="for a robust check decided on a worst case: SPACE@BUDGET; else null"
    )
    attacks: list[str] = Field(description="the threats whose per-sample worst case it is")


class MeasurementRecord(_Open):
    metric: str
    threat: str | None
    budget: float | None
    value: Number
    ci_low: Number
    ci_high: Number
    confidence: float
    n: int
    seed: int


class SuiteRecord(_Open):
    name: str
    kind: Literal["invariance", "directional", "minimum"]
    n: int
    failures: int
    failure_rate: Number
    failure_rate_ci: list[Number] = Field(min_length=2, max_length=2)
    passed: bool
    confidence: float
    seed: int


class BlockingFindingRecord(_Open):
    finding_id: str = Field(pattern=r"^HML-[0-9a-f]{8}$")
    severity: Literal["critical", "high", "medium", "low"]
    title: str
    owner: str
    due: str
    status: str
    taxonomy: dict[str, Any] = Field(
        description="MITRE ATLAS (`atlas`) and OWASP ML Top Ten (`owasp_ml`) ids of the threat"
    )


class CheckpointRecord(_Open):
    """A signed checkpoint of the ledger (`hardenml ledger checkpoint`, RFC 9162 style)."""

    format: Literal["hardenml.ledger.checkpoint/1"]
    tree_size: int = Field(ge=0, description="how many of the ledger's first events it covers")
    root_hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="their Merkle tree root")
    chain_head: str = Field(pattern=r"^[0-9a-f]{64}$", description="hash of the last of them")
    timestamp: str
    key_id: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the public key")
    signature: str = Field(description="Ed25519 over the signed text, base64")


class GateReportJson(_Open):
    """One gate decision (`gate-report.json`, docs/gate-report.md)."""

    schema_version: str = Field(pattern=r"^1\.[0-9]+$", description="MAJOR.MINOR of this format")
    tool: ToolRecord
    project: str
    model: ModelRecord
    decision: DecisionRecord
    run: RunRecordJson
    ledger: LedgerHeadRecord | None = Field(
        description="null only for a decision made in code without reading a ledger"
    )
    checks: list[CheckRecord]
    measurements: list[MeasurementRecord]
    behaviour: list[SuiteRecord]
    blocking_findings: list[BlockingFindingRecord]
    ledger_checkpoint: CheckpointRecord | None = Field(
        description="the decided chain, signed; null when no signing key was configured"
    )
    ledger_anchor: str = Field(description="what the checkpoint covers, or what its absence leaves")
    privacy: dict[str, Any] | None = Field(
        description="(epsilon, delta) the model's DP-SGD training spent; null when none"
    )


def config_schema() -> dict[str, Any]:
    """The schema of `hardenml.toml` (as parsed into a table), from `HardenConfig`."""
    schema = HardenConfig.model_json_schema(mode="validation")
    for name in _LOADER_FIELDS:
        schema["properties"].pop(name, None)
    return {
        "$schema": DIALECT,
        "title": "hardenml.toml",
        "description": "The threat model and release policy of a hardenml project "
        "(docs/config.md). Generated from hardenml.config.HardenConfig.",
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }


def gate_report_schema() -> dict[str, Any]:
    """The schema of `gate-report.json`, version 1.x."""
    schema = GateReportJson.model_json_schema(mode="validation")
    return {
        "$schema": DIALECT,
        "title": "gate-report.json",
        "description": f"One release-gate decision of hardenml, format "
        f"{GATE_REPORT_SCHEMA_VERSION} (docs/gate-report.md). Readers must ignore keys they "
        "do not know.",
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }


def schema_files() -> dict[str, str]:
    """File name -> text of every schema, as `hardenml schema --out` writes them."""
    return {
        CONFIG_SCHEMA_FILE: json.dumps(config_schema(), indent=2) + "\n",
        GATE_REPORT_SCHEMA_FILE: json.dumps(gate_report_schema(), indent=2) + "\n",
        PROMPT_SUBMISSION_SCHEMA_FILE: json.dumps(prompt_submission_schema(), indent=2) + "\n",
    }


def prompt_submission_schema() -> dict[str, Any]:
    """The schema of a prompt submission (`hardenml.scan.prompt_intake`), written by hand
    beside the loader that enforces it (the loader's errors name the key, as the schema's)."""
    return {"$schema": DIALECT, **PROMPT_SUBMISSION_SCHEMA}
