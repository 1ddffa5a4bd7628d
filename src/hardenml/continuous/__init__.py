"""Continuous hardening: the replay buffer, retraining, change summaries."""

from hardenml.continuous.replay import (
    ReplayError,
    ReplayRows,
    ReplayVersion,
    add_findings,
    latest_replay,
    reservoir,
    rows_from_flagged,
    update_replay,
)

__all__ = [
    "ReplayError",
    "ReplayRows",
    "ReplayVersion",
    "add_findings",
    "latest_replay",
    "reservoir",
    "rows_from_flagged",
    "update_replay",
]
