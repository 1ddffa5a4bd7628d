"""The append-only, hash-chained event store and the state derived from it."""

from hardenml.ledger.findings import (
    REVIEW_ACTIONS,
    FindingState,
    ReviewError,
    RunRecord,
    due_date,
    escalate_overdue,
    findings_state,
    latest_run,
    record_scan,
    resolve_finding,
    review,
    sorted_findings,
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
    "REVIEW_ACTIONS",
    "ReviewError",
    "RunRecord",
    "VerifyReport",
    "canonical_json",
    "due_date",
    "escalate_overdue",
    "findings_state",
    "latest_run",
    "record_scan",
    "resolve_finding",
    "review",
    "sorted_findings",
]
