"""Where a scan's shards run: the `Executor` protocol and the local executor.

An executor turns the function that computes one shard (`hardenml.scan.shards`) into the
scan's `BatchRunner`. The function it is given must be safe to send to another process: a
module-level function and our own frozen dataclasses (`functools.partial` of the two), so
that a worker rebuilds the model from the workspace itself and no user object is pickled.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Literal, Protocol, Self

from hardenml.scan.shards import BatchArrays, BatchRunner, BatchShard

ExecutorKind = Literal["local", "dask"]
ShardFunction = Callable[[BatchShard], BatchArrays]


class ExecutorError(ValueError):
    """The executor cannot run the scan as asked (no Dask installed, no scheduler at the
    address): the message names the option and the fix."""


class Executor(Protocol):
    """Runs a scan's shards. `batch_runner` returns None when the scan should run them in
    its own process with the target it already holds (the local executor)."""

    name: str

    def batch_runner(self, compute: ShardFunction) -> BatchRunner | None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None: ...


class ClosedOnExit:
    """`with executor:` starts it (`__enter__`) and always closes it (`close`)."""

    def close(self) -> None:
        return None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


class LocalExecutor(ClosedOnExit):
    """The default: every shard in the scan's own process, one after another, each only
    when the scan asks for it (today's behaviour; nothing is sent anywhere)."""

    name = "local"

    def batch_runner(self, compute: ShardFunction) -> BatchRunner | None:
        return None
