"""Plain supervised training of a torch classifier, seeded and with a progress hook."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hardenml._progress import Progress, SilentProgress

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
# Learning rate at a point of training measured in epochs (0.5: half way through the first).
LrSchedule = Callable[[float], float]
# Called after each epoch with (epoch index, module, optimizer); True stops training. It may
# load an earlier state into the module and the optimizer (a rollback) before returning.
EpochHook = Callable[[int, nn.Module, torch.optim.Optimizer], bool]
# Called before each batch's loss with the batch's rows of `x` (their indices).
BatchHook = Callable[[torch.Tensor], None]


def set_seed(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def train_classifier(
    module: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 5,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    device: torch.device | None = None,
    progress: Progress | None = None,
    loss_fn: LossFn | None = None,
    after_epoch: EpochHook | None = None,
    label: str = "training",
    lr_at: LrSchedule | None = None,
    before_batch: BatchHook | None = None,
    replays: int = 1,
) -> nn.Module:
    """Adam on cross-entropy (or `loss_fn(module, xb, yb)`); same seed, same weights.

    `loss_fn` is called with the module in train mode; one that switches to eval mode to
    craft inputs (adversarial training does) switches back before its loss's forward pass.
    `after_epoch` sees the module in eval mode. `lr_at`, when given, sets the learning rate
    before each step from the epochs done so far (with `lr` the optimiser's initial value).
    `before_batch` sees which rows of `x` the next loss is on, for a loss that keeps state
    per training example (a perturbation carried from one epoch to the next). `replays`
    takes that many optimiser steps on each batch in a row (Shafahi et al. 2019's minibatch
    replay, for free adversarial training), each with its own `before_batch` and loss.
    """
    progress = progress or SilentProgress()
    gen = set_seed(seed)
    device = device or torch.device("cpu")
    module.to(device)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    advance = progress.task(f"{label} ({epochs} epochs)", epochs * len(xt))
    steps_per_epoch = max(1, -(-len(xt) // batch_size))
    for epoch in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        for step, start in enumerate(range(0, len(xt), batch_size)):
            if lr_at is not None:
                for group in opt.param_groups:
                    group["lr"] = lr_at(epoch + (step + 1) / steps_per_epoch)
            idx = order[start : start + batch_size]
            xb, yb = xt[idx].to(device), yt[idx].to(device)
            for _ in range(replays):
                if before_batch is not None:
                    before_batch(idx)
                module.train()
                loss = loss_fn(module, xb, yb) if loss_fn else F.cross_entropy(module(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            advance(len(idx))
        module.eval()
        if after_epoch is not None and after_epoch(epoch, module, opt):
            advance((epochs - epoch - 1) * len(xt))
            break
    return module.eval()
