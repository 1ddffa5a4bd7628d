"""Memory-bounded chunks: how many samples one attack may work on at once.

An attack's working memory grows with the samples it holds: autograd keeps every layer's
activations for the backward pass, and the attack keeps a few copies of its inputs
(the clean batch, the iterate, the best so far, a gradient). `Threat.__call__` splits a
batch into chunks whose estimate fits a budget,

    rows = budget // (activation bytes per row + working copies * input bytes per row),

so a large batch, or a large input, never holds more than the budget at a time.

Activation bytes per row are measured, once per target, by counting what autograd saves
during a forward pass of one row and of two rows: the difference leaves out what is saved
once per pass (weights). The budget is `Target.memory_budget` when set (the scan sets it
from `scan.memory_mb`), else `HARDENML_MEMORY_MB`, else a fixed default per device kind:
1 GiB on the CPU, half the card's total memory on a GPU. It is fixed on purpose, not read
from the memory free at the time: chunk sizes, and so the random draws of a seeded attack,
must not change with what else the machine is doing. On a GPU an out-of-memory error still
halves the chunk and retries it from the same generator state.
"""

from __future__ import annotations

import os

import torch

from hardenml.targets import Target

CPU_DEFAULT_BUDGET = 1 << 30
ENV_BUDGET = "HARDENML_MEMORY_MB"


def memory_budget(target: Target) -> int:
    """Bytes one attack call may use for its working set on `target`."""
    if target.memory_budget is not None:
        return target.memory_budget
    env = os.environ.get(ENV_BUDGET)
    if env:
        try:
            mb = float(env)
        except ValueError:
            raise ValueError(f"{ENV_BUDGET}={env!r} is not a number of megabytes") from None
        if mb <= 0:
            raise ValueError(f"{ENV_BUDGET} must be positive, got {env!r}")
        return int(mb * 2**20)
    if target.device.type == "cuda":
        return torch.cuda.get_device_properties(target.device).total_memory // 2
    return CPU_DEFAULT_BUDGET


def input_bytes_per_row(target: Target) -> int:
    spec = target.input_spec
    return max(1, int(torch.Size(spec.shape).numel()) * spec.dtype.itemsize)


def activation_bytes_per_row(target: Target) -> int:
    """What autograd saves for one more row in a forward pass (0 without gradients)."""
    if target.activation_bytes_per_row is None:
        if target.has_gradients:
            one, two = _saved_bytes(target, 1), _saved_bytes(target, 2)
            # A model whose saved set does not grow with rows still needs its logits.
            target.activation_bytes_per_row = max(two - one, 0)
        else:
            target.activation_bytes_per_row = 0
    return target.activation_bytes_per_row


def _saved_bytes(target: Target, rows: int) -> int:
    spec = target.input_spec
    lo, hi = spec.bounds
    x = torch.full((rows, *spec.shape), (lo + hi) / 2, dtype=spec.dtype, device=target.device)
    x.requires_grad_(True)
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        # One storage saved by several nodes (a ReLU's output used twice) is held once.
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    # A randomised model draws from torch's global generator: the measurement must not
    # consume its draws, or a seeded evaluation would depend on whether it had run yet.
    devices = [target.device.index or 0] if target.device.type == "cuda" else []
    with (
        torch.random.fork_rng(devices=devices),
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
    ):
        # The private forward: a measurement is not a query of the model.
        out = target._forward(x)
    return sum(seen.values()) + out.numel() * out.element_size()


def chunk_rows(target: Target, working_copies: int) -> int:
    """Rows per chunk for an attack keeping `working_copies` copies of its inputs."""
    per_row = activation_bytes_per_row(target) + working_copies * input_bytes_per_row(target)
    return max(1, memory_budget(target) // per_row)
