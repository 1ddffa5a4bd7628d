"""Prompt probes for chat models (family "prompt"): one file per probe family, prompts as
versioned data files in `prompts/`, reply detectors with measured error rates."""

from hardenml.threats.probes.base import (
    ProbeOutcome,
    ProbeVerdict,
    PromptFileError,
    PromptProbe,
    PromptSet,
)
from hardenml.threats.probes.detectors import DETECTORS, Detector, ErrorRates, detector

__all__ = [
    "DETECTORS",
    "Detector",
    "ErrorRates",
    "ProbeOutcome",
    "ProbeVerdict",
    "PromptFileError",
    "PromptProbe",
    "PromptSet",
    "detector",
]
