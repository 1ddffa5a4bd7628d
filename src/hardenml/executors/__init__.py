"""Where a scan's shards run: in the scan's own process (the default) or on Dask."""

from hardenml.executors.base import (
    Executor,
    ExecutorError,
    ExecutorKind,
    LocalExecutor,
    ShardFunction,
)
from hardenml.executors.dask_executor import DaskExecutor


def open_executor(
    kind: ExecutorKind, *, scheduler: str | None = None, workers: int = 2
) -> Executor:
    """The executor `kind` names, not yet started (use it in a `with`)."""
    if kind == "dask":
        return DaskExecutor(scheduler=scheduler, workers=workers)
    if scheduler is not None:
        raise ExecutorError("--scheduler joins a Dask cluster: give it with --executor dask")
    return LocalExecutor()


__all__ = [
    "DaskExecutor",
    "Executor",
    "ExecutorError",
    "ExecutorKind",
    "LocalExecutor",
    "ShardFunction",
    "open_executor",
]
