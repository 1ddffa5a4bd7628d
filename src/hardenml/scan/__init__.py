"""Metrics with confidence intervals, policy checks and findings."""

from hardenml.scan.behaviour import SuiteResult, run_suites
from hardenml.scan.metrics import interval_method, proportion
from hardenml.scan.policy import PolicyCheck, checks_for, finding_for
from hardenml.scan.scanner import ScanResult, run_scan

__all__ = [
    "PolicyCheck",
    "ScanResult",
    "SuiteResult",
    "checks_for",
    "finding_for",
    "interval_method",
    "proportion",
    "run_scan",
    "run_suites",
]
