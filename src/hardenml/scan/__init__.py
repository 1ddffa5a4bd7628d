"""Metrics with confidence intervals, policy checks and findings."""

from hardenml.scan.behaviour import SuiteResult, run_suites
from hardenml.scan.metrics import proportion
from hardenml.scan.policy import PolicyCheck, checks_for, finding_for
from hardenml.scan.scanner import ScanResult, run_scan
from hardenml.scan.stochastic import StochasticCheck, stochastic_view

__all__ = [
    "PolicyCheck",
    "ScanResult",
    "StochasticCheck",
    "SuiteResult",
    "checks_for",
    "finding_for",
    "proportion",
    "run_scan",
    "run_suites",
    "stochastic_view",
]
