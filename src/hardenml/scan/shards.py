"""What a scan hands to whatever runs its batches: one shard per batch of the plan.

A shard is a batch number and the sample indices the seeded plan gave it
(`hardenml.scan.evaluation.batch_plan`). Every draw a threat makes on a batch is seeded
by the scan's seed, the threat, the budget and the batch number, never by the process or
the order the batches ran in, so a batch gives the same arrays wherever it runs. That is
what lets `hardenml.executors` run shards on other processes or machines and still end
with the numbers of the local scan.

A `BatchRunner` takes the shards still to do and yields `(batch, arrays)` as each one
finishes, in any order; the scan checkpoints each as it arrives and folds them in plan
order. Closing the iterator (a sequential scan that settled, a time budget spent) must
stop the work still pending.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

# A shard computed in another process reports the inputs it sent to the model under this
# key (one number), because the scan's own `Target.queries` never sees those calls.
SHARD_QUERIES = "meta/queries"


@dataclass(frozen=True)
class BatchShard:
    """Batch number `batch` of the scan's plan and the sample indices it holds."""

    batch: int
    index: np.ndarray


BatchArrays = dict[str, np.ndarray]
BatchRunner = Callable[[Sequence[BatchShard]], Iterator[tuple[int, BatchArrays]]]
