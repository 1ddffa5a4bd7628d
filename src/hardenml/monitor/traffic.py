"""Blue/green: the released model and a candidate, a traffic split, an atomic switch.

The split is one immutable `TrafficPlan`; a switch builds a new plan and replaces the
reference under a lock. A request reads the plan once, at its start, and keeps the model it
picked until it answers, so a switch or rollback never fails or reroutes a request in
flight (both versions stay loaded). Which version a request gets follows from a hash of
its request id and the seed, so the same request id always lands on the same version
under the same split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from hardenml.monitor.models import ServedModel
from hardenml.monitor.readings import MonitorError


def request_share(request_id: str, seed: int) -> float:
    """A uniform number in [0, 1) fixed by the request id and the seed."""
    digest = hashlib.sha256(f"{seed}:{request_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class TrafficPlan:
    """Who serves: the released model, the candidate (if loaded) and its share."""

    released: ServedModel
    candidate: ServedModel | None
    candidate_share: float
    seed: int

    def pick(self, request_id: str) -> ServedModel:
        if self.candidate is None or self.candidate_share <= 0.0:
            return self.released
        if self.candidate_share >= 1.0:
            return self.candidate
        chosen = request_share(request_id, self.seed) < self.candidate_share
        return self.candidate if chosen else self.released

    def shares(self) -> dict[str, float]:
        """Share of traffic per model version."""
        if self.candidate is None:
            return {self.released.version: 1.0}
        if self.candidate.version == self.released.version:
            return {self.released.version: 1.0}
        return {
            self.released.version: 1.0 - self.candidate_share,
            self.candidate.version: self.candidate_share,
        }


class TrafficRouter:
    """Holds the current plan; `switch` replaces it in one step."""

    def __init__(self, plan: TrafficPlan) -> None:
        self._plan = plan

    @property
    def plan(self) -> TrafficPlan:
        return self._plan

    def planned(self, candidate_share: float) -> TrafficPlan:
        """The plan that sends `candidate_share` of the traffic to the candidate (0: all to
        the released model, 1: all to the candidate); nothing changes until `install`."""
        if not 0.0 <= candidate_share <= 1.0:
            raise MonitorError(f"candidate_share must lie in [0, 1], got {candidate_share}")
        plan = self._plan
        if plan.candidate is None and candidate_share > 0.0:
            raise MonitorError(
                "no candidate is loaded, so no traffic can go to one: set monitor.candidate "
                "and restart the service"
            )
        return TrafficPlan(plan.released, plan.candidate, candidate_share, plan.seed)

    def install(self, plan: TrafficPlan) -> None:
        """Serve by `plan` from the next request on (one reference assignment: requests
        that already picked their model keep it)."""
        self._plan = plan
