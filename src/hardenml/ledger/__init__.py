"""The append-only, hash-chained event store and the state derived from it."""

from hardenml.ledger.findings import (
    FindingState,
    RunRecord,
    due_date,
    findings_state,
    latest_run,
    record_scan,
)
from hardenml.ledger.store import (
    GENESIS,
    ChainProblem,
    Event,
    Ledger,
    LedgerError,
    VerifyReport,
    canonical_json,
)

__all__ = [
    "ChainProblem",
    "Event",
    "FindingState",
    "GENESIS",
    "Ledger",
    "LedgerError",
    "RunRecord",
    "VerifyReport",
    "canonical_json",
    "due_date",
    "findings_state",
    "latest_run",
    "record_scan",
]
