"""Attacks and perturbations: one per file, registered by name."""

from hardenml.threats._gradient import projected_gradient
from hardenml.threats.base import (
    FAMILIES,
    Access,
    AttackResult,
    Family,
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
    check_access,
    gradient_free_threats,
    make_threat,
    threat_class,
    threat_parameters,
    validate_threats,
)

__all__ = [
    "Access",
    "AttackResult",
    "FAMILIES",
    "Family",
    "Norm",
    "Threat",
    "ThreatError",
    "ThreatLookupError",
    "ThreatParameterError",
    "available_threats",
    "check_access",
    "gradient_free_threats",
    "make_threat",
    "perturbation_size",
    "project",
    "projected_gradient",
    "threat_class",
    "threat_parameters",
    "validate_threats",
]
