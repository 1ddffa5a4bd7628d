"""Metrics with confidence intervals, policy checks and findings."""

from hardenml.scan.behaviour import SuiteResult, run_suites
from hardenml.scan.metrics import interval_method, proportion
from hardenml.scan.policy import PolicyCheck, checks_for, finding_for
from hardenml.scan.scanner import ScanResult, run_scan
from hardenml.scan.stochastic import StochasticCheck, stochastic_view
from hardenml.scan.threat_models import SharedThreatModel, shared_threat_models, worst_case

__all__ = [
    "PolicyCheck",
    "ScanResult",
    "SharedThreatModel",
    "StochasticCheck",
    "SuiteResult",
    "checks_for",
    "finding_for",
    "interval_method",
    "proportion",
    "run_scan",
    "run_suites",
    "shared_threat_models",
    "stochastic_view",
    "worst_case",
]
