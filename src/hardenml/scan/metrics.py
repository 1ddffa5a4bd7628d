"""Measurements and their confidence intervals."""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Any

from scipy.stats import norm


def derive_seed(seed: int, *parts: object) -> int:
    """An independent, reproducible seed for one unit of work (threat, budget, batch)."""
    text = "|".join([str(seed), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (good coverage for small n and p near 0/1).

    Wilson 1927, https://doi.org/10.1080/01621459.1927.10502953.
    """
    if n <= 0:
        return (0.0, 1.0)
    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Measurement:
    """One number the scan measured, with how sure we are of it."""

    metric: str
    threat: str | None
    budget: float | None
    value: float
    ci_low: float
    ci_high: float
    confidence: float
    n: int
    seed: int

    @property
    def key(self) -> str:
        if self.threat is None:
            return self.metric
        return f"{self.metric}[{self.threat}@{self.budget:g}]"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        return cls(**data)


def proportion(
    metric: str,
    hits: int,
    n: int,
    *,
    threat: str | None = None,
    budget: float | None = None,
    confidence: float,
    seed: int,
) -> Measurement:
    lo, hi = wilson_interval(hits, n, confidence)
    return Measurement(
        metric, threat, budget, hits / n if n else float("nan"), lo, hi, confidence, n, seed
    )
