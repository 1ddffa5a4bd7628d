"""Paired comparisons of two models on the same data: non-inferiority, McNemar, bootstrap."""

from hardenml.validate.evaluate import Outcomes, evaluate, robust_key
from hardenml.validate.stats import (
    McNemar,
    ece_difference_interval,
    expected_calibration_error,
    mcnemar_exact,
    mean_difference_interval,
    resampling_counts,
)
from hardenml.validate.verdict import ValidationCheck, Verdict, compare

__all__ = [
    "McNemar",
    "Outcomes",
    "ValidationCheck",
    "Verdict",
    "compare",
    "ece_difference_interval",
    "evaluate",
    "expected_calibration_error",
    "mcnemar_exact",
    "mean_difference_interval",
    "resampling_counts",
    "robust_key",
]
