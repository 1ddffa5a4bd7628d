"""Metrics with confidence intervals, policy checks and findings."""

from hardenml.scan.behaviour import SuiteResult, run_suites
from hardenml.scan.metrics import Measurement, derive_seed, proportion, wilson_interval
from hardenml.scan.policy import (
    Finding,
    PolicyCheck,
    checks_for,
    finding_for,
    finding_id_for,
    fingerprint,
)
from hardenml.scan.scanner import Progress, ScanResult, SilentProgress, run_scan

__all__ = [
    "Finding",
    "Measurement",
    "PolicyCheck",
    "Progress",
    "ScanResult",
    "SilentProgress",
    "SuiteResult",
    "checks_for",
    "derive_seed",
    "finding_for",
    "finding_id_for",
    "fingerprint",
    "proportion",
    "run_scan",
    "run_suites",
    "wilson_interval",
]
