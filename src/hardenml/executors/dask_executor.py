"""Scale-out on Dask distributed: each shard of a scan is one Dask task.

https://distributed.dask.org. Without a scheduler address, a `LocalCluster` starts on
this machine, bound to 127.0.0.1 with no dashboard, one single-threaded worker process
per `workers`: nothing listens on, or contacts, anything but the loopback interface. With
one (`--scheduler tcp://host:8786`), the scan joins that cluster (Dask on Kubernetes, an
HPC queue, a cloud service); its workers need hardenml and the workspace (config, model
file, data) at the same path, and check that they see the same model and data.

A shard's numbers depend only on the seed and its batch number (`hardenml.scan.shards`),
so which worker ran it, and how often, changes nothing. A task whose worker died is
rescheduled by Dask (up to `distributed.scheduler.allowed-failures` deaths) and one that
raised is retried `retries` times; the scan keeps the first result of each shard, and the
ledger gets the run once, from the scan's own process.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, Self

from hardenml.executors.base import ClosedOnExit, ExecutorError, ShardFunction
from hardenml.scan.shards import BatchArrays, BatchRunner, BatchShard

LOOPBACK = "127.0.0.1"


def _distributed() -> Any:
    """The `distributed` module, or an error that says how to install it."""
    try:
        import distributed
    except ImportError:
        raise ExecutorError(
            "--executor dask needs Dask distributed, which is not installed: "
            'pip install "hardenml[dask]"'
        ) from None
    return distributed


class DaskExecutor(ClosedOnExit):
    """Shards as Dask tasks, on the cluster at `scheduler` or on a local one of `workers`
    processes (started on `__enter__`, closed on `close`). `retries`: how often a shard
    that raised is run again; `connect_seconds`: how long to wait for the scheduler (None:
    Dask's `distributed.comm.timeouts.connect`, 30 s unless configured)."""

    name = "dask"

    def __init__(
        self,
        *,
        scheduler: str | None = None,
        workers: int = 2,
        retries: int = 2,
        connect_seconds: float | None = None,
    ) -> None:
        if workers < 1:
            raise ExecutorError(f"--workers must be at least 1, got {workers}")
        self.scheduler = scheduler
        self.workers = workers
        self.retries = retries
        self.connect_seconds = connect_seconds
        self.client_: Any = None
        self.cluster_: Any = None

    def __enter__(self) -> Self:
        distributed = _distributed()
        if self.scheduler is None:
            self.cluster_ = distributed.LocalCluster(
                n_workers=self.workers,
                threads_per_worker=1,
                processes=True,
                host=LOOPBACK,
                dashboard_address=None,
                worker_dashboard_address=None,
                silence_logs=logging.ERROR,
            )
            self.client_ = distributed.Client(self.cluster_)
            return self
        wait = {} if self.connect_seconds is None else {"timeout": self.connect_seconds}
        try:
            self.client_ = distributed.Client(self.scheduler, **wait)
        except (OSError, ValueError, TypeError) as exc:
            raise ExecutorError(
                f"--scheduler {self.scheduler!r}: no Dask scheduler answered there ({exc}). "
                "Give the address a running scheduler prints (tcp://HOST:8786), or leave "
                "--scheduler out to start a local cluster on 127.0.0.1"
            ) from None
        return self

    def close(self) -> None:
        if self.client_ is not None:
            self.client_.close()
            self.client_ = None
        if self.cluster_ is not None:
            self.cluster_.close()
            self.cluster_ = None

    def batch_runner(self, compute: ShardFunction) -> BatchRunner | None:
        if self.client_ is None:
            raise ExecutorError("the Dask executor is not started: use it as `with DaskExecutor()`")
        client = self.client_
        distributed = _distributed()
        retries = self.retries

        def run(shards: Sequence[BatchShard]) -> Iterator[tuple[int, BatchArrays]]:
            # One key per scan and batch: a shard rerun after a worker died replaces its
            # task instead of adding a second result.
            scan_key = uuid.uuid4().hex[:12]
            futures = {
                client.submit(
                    compute,
                    shard,
                    key=f"hardenml-shard-{scan_key}-{shard.batch:05d}",
                    retries=retries,
                    pure=False,
                ): shard.batch
                for shard in shards
            }
            try:
                for future in distributed.as_completed(list(futures)):
                    yield futures[future], future.result()
            finally:
                client.cancel(list(futures))

        return run
