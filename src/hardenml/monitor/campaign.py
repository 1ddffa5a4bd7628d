"""A query campaign: one client sending many near-duplicates of a few inputs.

A black-box attack probes the model around one input at a time: Square (Andriushchenko et
al. 2020, https://arxiv.org/abs/1912.00049; hardenml's threat "square") sends hundreds of
queries that differ from each other by a few small squares; decision-based attacks walk
along the boundary in small steps. Natural traffic has nothing like it. Following the
stateful detection of Chen, Carlini and Wagner 2020, "Stateful Detection of Black-Box
Adversarial Attacks", https://arxiv.org/abs/1907.05587 (nearest neighbours among a
client's recent queries), a query is a near-duplicate when its nearest other query of the
same client is closer than `radius_`: the `radius_quantile` quantile of the distances
between reference inputs and their nearest other reference input.

That radius is calibrated so ordinary traffic does not reach it: a client's m recent
queries are far fewer than the reference's rows, so if they are drawn like the reference
their nearest-neighbour distances are, if anything, larger than the reference's, and each
lies under the radius with probability at most about `radius_quantile`. A client is flagged
when it has at least `min_queries` queries in the window and at least `near_share` of them
are near-duplicates; its p-value is the binomial tail of its near-duplicate count at rate
`radius_quantile`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from scipy.stats import binomtest

from hardenml.monitor.mmd import squared_distances
from hardenml.monitor.readings import (
    DetectorReading,
    MonitorError,
    Window,
    as_rows,
    require_rows,
    seeded_subsample,
)

Norm = Literal["l2", "linf"]


def pairwise_distances(a: np.ndarray, b: np.ndarray, norm: Norm) -> np.ndarray:
    """(len(a), len(b)) distances in `norm`."""
    if norm == "l2":
        return np.sqrt(squared_distances(a, b))
    # torch's kernel takes the max without materialising (len(a), len(b), d) differences,
    # several times faster than numpy broadcasting (1,000 MNIST rows: under 2 s instead of
    # over 10 on one core); float32 is exact enough for a max of differences of inputs.
    distances = torch.cdist(
        torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32), p=np.inf
    )
    return distances.double().numpy()


def nearest_other(rows: np.ndarray, norm: Norm) -> np.ndarray:
    """Each row's distance to its nearest other row (inf for a single row)."""
    distances = pairwise_distances(rows, rows, norm)
    np.fill_diagonal(distances, np.inf)
    return distances.min(axis=1)


class QueryCampaign:
    """Flags clients whose recent queries are mostly near-duplicates of each other.

    `reference`: natural inputs `(n, *input shape)`. Arguments (keyword-only):
        norm: "l2" (default) or "linf", the distance between queries.
        radius_quantile: the radius is this quantile of the reference's nearest-neighbour
            distances (default 0.01).
        near_share: the share of a client's queries that must be near-duplicates (0.5).
        min_queries: clients with fewer queries in the window are not judged (20).
        max_queries: the most recent queries per client that are compared (500).
        max_reference: reference rows used for the calibration, a seeded subsample (1000);
            its nearest-neighbour search costs max_reference^2 * d.
        seed: the subsample.
    Readings: one per flagged client (`feature` the client id) and one overall (`feature`
    None, `statistic` the number of flagged clients).
    """

    name = "query_campaign"

    def __init__(
        self,
        reference: np.ndarray,
        *,
        norm: Norm = "l2",
        radius_quantile: float = 0.01,
        near_share: float = 0.5,
        min_queries: int = 20,
        max_queries: int = 500,
        max_reference: int = 1000,
        seed: int = 0,
    ) -> None:
        if norm not in ("l2", "linf"):
            raise MonitorError(f'norm must be "l2" or "linf", got {norm!r}')
        if not 0 < radius_quantile < 1 or not 0 < near_share <= 1:
            raise MonitorError("radius_quantile must lie in (0, 1) and near_share in (0, 1]")
        if min_queries < 2 or max_queries < min_queries:
            raise MonitorError(
                "min_queries must be at least 2 and max_queries at least min_queries"
            )
        self.norm: Norm = norm
        self.radius_quantile = radius_quantile
        self.near_share = near_share
        self.min_queries = min_queries
        self.max_queries = max_queries
        self.max_reference = max_reference
        self.seed = seed
        rows = as_rows(reference, "the reference data (query campaign)")
        require_rows(rows, 2, "the reference data (query campaign)")
        rows = seeded_subsample(rows, max_reference, seed)
        self.dims_ = rows.shape[1]
        nearest = nearest_other(rows, norm)
        # Exact duplicates in the reference (a dataset's repeated rows) would put the
        # radius at 0, where only byte-identical queries count; they are left out.
        positive = nearest[nearest > 0]
        if positive.size == 0:
            raise MonitorError("the reference data (query campaign) has no two distinct rows")
        self.radius_ = float(np.quantile(positive, radius_quantile))

    def evaluate(self, window: Window) -> list[DetectorReading]:
        rows = window.flat_inputs(self.name)
        clients = window.client_ids(self.name)
        if len(clients) != rows.shape[0]:
            raise MonitorError(f"{len(clients)} client ids for {rows.shape[0]} inputs")
        if rows.shape[1] != self.dims_:
            raise MonitorError(
                f"the window's inputs have {rows.shape[1]} features, the reference {self.dims_}"
            )
        ids = np.asarray(clients, dtype=object)
        readings: list[DetectorReading] = []
        judged = 0
        for client in sorted(set(clients)):
            mine = rows[ids == client][-self.max_queries :]
            m = mine.shape[0]
            if m < self.min_queries:
                continue
            judged += 1
            near = int((nearest_other(mine, self.norm) <= self.radius_).sum())
            if near / m < self.near_share:
                continue
            p_value = float(binomtest(near, m, self.radius_quantile, alternative="greater").pvalue)
            readings.append(
                DetectorReading(
                    detector=self.name,
                    feature=client,
                    statistic=near / m,
                    p_value=p_value,
                    flagged=True,
                    n=m,
                    detail=(
                        f"{near} of client {client}'s {m} recent queries lie within "
                        f"{self.radius_:.3g} ({self.norm}) of another of its queries; "
                        f"{self.radius_quantile:.0%} of reference inputs do"
                    ),
                )
            )
        flagged = [r.feature for r in readings]
        readings.append(
            DetectorReading(
                detector=self.name,
                feature=None,
                statistic=float(len(flagged)),
                p_value=None,
                flagged=bool(flagged),
                n=rows.shape[0],
                detail=(
                    f"{len(flagged)} of {judged} clients with {self.min_queries}+ queries "
                    "send near-duplicate queries"
                    + (f": {', '.join(str(c) for c in flagged)}" if flagged else "")
                ),
            )
        )
        return readings
