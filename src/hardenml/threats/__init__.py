"""Attacks and perturbations: one per file, registered by name."""

from hardenml.threats.base import (
    AttackResult,
    Norm,
    Threat,
    ThreatError,
    perturbation_size,
    project,
)
from hardenml.threats.parameters import ThreatParameterError
from hardenml.threats.registry import (
    ThreatLookupError,
    available_threats,
    make_threat,
    threat_class,
    threat_parameters,
    validate_threats,
)

__all__ = [
    "AttackResult",
    "Norm",
    "Threat",
    "ThreatError",
    "ThreatLookupError",
    "ThreatParameterError",
    "available_threats",
    "make_threat",
    "perturbation_size",
    "project",
    "threat_class",
    "threat_parameters",
    "validate_threats",
]
