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
    overdue_findings,
    record_scan,
    review,
)
from hardenml.ledger.store import (
    GENESIS,
    ChainHead,
    ChainProblem,
    Event,
    Ledger,
    LedgerError,
    LedgerTamperedError,
    VerifyReport,
    canonical_json,
)

__all__ = [
    "ChainHead",
    "ChainProblem",
    "Event",
    "FindingState",
    "GENESIS",
    "Ledger",
    "LedgerError",
    "LedgerTamperedError",
    "REVIEW_ACTIONS",
    "ReviewError",
    "RunRecord",
    "VerifyReport",
    "canonical_json",
    "due_date",
    "escalate_overdue",
    "findings_state",
    "latest_run",
    "overdue_findings",
    "record_scan",
    "review",
]
