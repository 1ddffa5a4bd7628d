"""A model factory for tests/test_executors.py: the digits MLP, except that the first
forward pass of a full batch in any process other than the test's own kills that process
(a Dask worker dying mid-shard). The marker file makes it happen once per test: whoever
creates it dies; every later call, in the respawned worker or another one, runs normally.
Copied into the test's workspace folder, so that the workers import it from there."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from hardenml.zoo import mlp

PROBE_ROWS = 8  # the scan's randomness probe sends this many; a shard sends more


def mlp_that_kills_a_worker_once(
    marker: str, test_pid: int, in_features: int, classes: int, hidden: int
) -> nn.Module:
    module = mlp(in_features, classes, hidden)

    def maybe_die(_: nn.Module, inputs: tuple[Any, ...]) -> None:
        if os.getpid() == test_pid or len(inputs[0]) <= PROBE_ROWS:
            return
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        os._exit(1)

    module.register_forward_pre_hook(maybe_die)
    return module
