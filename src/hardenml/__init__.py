"""hardenml: find a model's vulnerabilities, patch them, prove it, gate the release."""

from hardenml._version import __version__
from hardenml.api import model_sha256, scan_model
from hardenml.config import ConfigError, HardenConfig, load_config
from hardenml.data import DataError, Dataset
from hardenml.gate import GateDecision
from hardenml.ledger import Ledger
from hardenml.records import Finding, Measurement
from hardenml.scan import ScanResult
from hardenml.targets import InputSpec, SklearnTarget, Target, TargetError, TorchTarget
from hardenml.threats import AttackResult, Threat
from hardenml.workflow import Workspace, gate, patch, release, scan, validate

__all__ = [
    "AttackResult",
    "ConfigError",
    "DataError",
    "Dataset",
    "Finding",
    "GateDecision",
    "HardenConfig",
    "InputSpec",
    "Ledger",
    "Measurement",
    "ScanResult",
    "SklearnTarget",
    "Target",
    "TargetError",
    "Threat",
    "TorchTarget",
    "Workspace",
    "__version__",
    "gate",
    "load_config",
    "model_sha256",
    "patch",
    "release",
    "scan",
    "scan_model",
    "validate",
]
