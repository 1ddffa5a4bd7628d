"""Paired comparisons of two models on the same data: non-inferiority, McNemar, bootstrap."""

from hardenml.validate.evaluate import Outcomes, evaluate, robust_key
from hardenml.validate.verdict import ValidationCheck, Verdict, compare

__all__ = [
    "Outcomes",
    "ValidationCheck",
    "Verdict",
    "compare",
    "evaluate",
    "robust_key",
]
