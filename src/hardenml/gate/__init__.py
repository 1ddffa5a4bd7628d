"""The release decision: the policy over the latest measurements and open findings."""

from hardenml.gate.decision import (
    EXIT_FAIL,
    EXIT_INTERNAL,
    EXIT_PASS,
    EXIT_TAMPERED,
    EXIT_USAGE,
    GateDecision,
    decide,
)

__all__ = [
    "EXIT_FAIL",
    "EXIT_INTERNAL",
    "EXIT_PASS",
    "EXIT_TAMPERED",
    "EXIT_USAGE",
    "GateDecision",
    "decide",
]
