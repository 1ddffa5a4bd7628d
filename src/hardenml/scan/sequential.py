"""Anytime-valid intervals, so a scan may stop as soon as the gate's decision is settled.

A confidence sequence holds at every sample size simultaneously: looking after each
batch and stopping when it clears the threshold does not inflate the error. We use
Robbins' normal-mixture boundary for 1/2-sub-Gaussian (i.e. [0, 1]-bounded)
observations, as in Howard, Ramdas, McAuliffe and Sekhon 2021, "Time-uniform,
nonparametric, nonasymptotic confidence sequences", https://arxiv.org/abs/1810.08240:

    P(exists t: |S_t - t*mu| >= sqrt((t/4 + rho) * log((t/4 + rho) / (rho * alpha^2)))) <= alpha

(Ville's inequality on the mixture martingale). `rho` only moves where the boundary is
tightest; we tune it for the largest sample size the scan may use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Decision = Literal["pass", "fail", "undecided"]
SIGMA2 = 0.25  # variance proxy of a [0, 1]-bounded observation (Hoeffding)


def mixture_rho(n_opt: int, alpha: float) -> float:
    """Howard et al.'s choice of rho that makes the boundary tightest near n_opt samples."""
    log_inv = math.log(1 / alpha)
    return SIGMA2 * max(n_opt, 1) / (2 * log_inv + math.log(1 + 2 * log_inv))


def confidence_sequence(successes: int, n: int, *, alpha: float, rho: float) -> tuple[float, float]:
    """The interval at time n of a (1 - alpha) confidence sequence for a Bernoulli mean."""
    if n <= 0:
        return (0.0, 1.0)
    v = n * SIGMA2 + rho
    radius = math.sqrt(v * math.log(v / (rho * alpha * alpha))) / n
    mean = successes / n
    return (max(0.0, mean - radius), min(1.0, mean + radius))


@dataclass(frozen=True)
class SequentialCheck:
    """Where one gated metric stands: its anytime interval and whether it is settled."""

    threshold: float
    successes: int
    n: int
    ci_low: float
    ci_high: float

    @property
    def decision(self) -> Decision:
        if self.ci_low >= self.threshold:
            return "pass"
        if self.ci_high < self.threshold:
            return "fail"
        return "undecided"

    @property
    def settled(self) -> bool:
        return self.decision != "undecided"


def sequential_check(
    successes: int, n: int, threshold: float, *, confidence: float, n_max: int
) -> SequentialCheck:
    alpha = 1 - confidence
    lo, hi = confidence_sequence(successes, n, alpha=alpha, rho=mixture_rho(n_max, alpha))
    return SequentialCheck(threshold, successes, n, lo, hi)
