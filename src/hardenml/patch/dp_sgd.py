"""Differentially private training with DP-SGD, on Opacus (extra `hardenml[privacy]`).

Abadi et al. 2016, "Deep Learning with Differential Privacy",
https://arxiv.org/abs/1607.00133: each example's gradient is clipped to L2 norm
`max_grad_norm`, Gaussian noise of standard deviation `noise_multiplier * max_grad_norm`
is added to their sum, and batches are drawn by Poisson sampling, so the privacy loss of
the whole run is bounded; Opacus (Yousefpour et al. 2021, https://arxiv.org/abs/2109.12298)
computes per-sample gradients and tracks the loss with its RDP accountant (Mironov 2017,
https://arxiv.org/abs/1702.07476). The noise multiplier is chosen so the run spends at
most `target_epsilon` at `delta`; the (epsilon, delta) actually spent goes into the lineage
event (`metrics.privacy`), and from there into the gate report and the model card.

The guarantee covers the training data this patch sees. It says nothing about data the
parent model was trained on, which is why the default is `init = "scratch"`, a fresh
module from `model.factory`; `finetune` keeps the parent's weights (whose training was
not private) and is recorded as such. The holdout is only measured, never used to pick
an epoch: choosing by it would spend privacy the accountant does not count.

Arguments (keyword-only):
    target_epsilon: the privacy budget epsilon the run may spend (default 8.0).
    delta: its delta; default 1 / (10 n) for n training examples (below 1/n, as a
        meaningful delta must be).
    max_grad_norm: per-example gradient clipping norm C (1.0).
    epochs (10), lr (0.5, SGD; DP-SGD's noise favours large steps), batch_size (expected
        Poisson batch size, 64), init ("scratch" or "finetune").
Inputs have shape `(n, *input_spec.shape)` in the raw input space.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from hardenml.patch.base import (
    Patch,
    PatchContext,
    PatchError,
    PatchResult,
    build_module,
    in_input_space,
    like,
    torch_parts,
    trainable_copy,
)

MECHANISM = "DP-SGD (Abadi et al. 2016), Opacus RDP accountant"


@torch.no_grad()
def _accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    return float((net(x).argmax(dim=1) == y).float().mean())


def _opacus() -> Any:
    try:
        import opacus
    except ImportError:
        raise PatchError(
            "dp_sgd needs Opacus: pip install 'hardenml[privacy]' (it keeps the installed torch)"
        ) from None
    return opacus


@dataclass(kw_only=True, repr=False, eq=False)
class DPSGD(Patch):
    kinds: ClassVar[tuple[str, ...]] = ("pytorch",)
    # Privacy, not robustness: no robustness finding proposes it.
    addresses: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str] = "differentially private training (DP-SGD, Abadi et al. 2016)"

    target_epsilon: float = 8.0
    delta: float | None = None
    max_grad_norm: float = 1.0
    epochs: int = 10
    lr: float = 0.5
    batch_size: int = 64
    init: Literal["scratch", "finetune"] = "scratch"

    def __post_init__(self) -> None:
        if not self.target_epsilon > 0 or not self.max_grad_norm > 0:
            raise ValueError("target_epsilon and max_grad_norm must be positive")
        if self.delta is not None and not 0 < self.delta < 1:
            raise ValueError("delta must lie strictly between 0 and 1")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError("epochs, batch_size and lr must be positive")

    def run(self, ctx: PatchContext) -> PatchResult:
        opacus = _opacus()
        parent, spec = torch_parts(ctx.target)
        if self.init == "scratch":
            module = build_module(ctx.model, ctx.seed_for("dp_sgd", "init"))
        else:
            module = trainable_copy(parent)
        problems = opacus.validators.ModuleValidator.validate(module, strict=False)
        if problems:
            raise PatchError(
                f"DP-SGD cannot train this module: {problems[0]}; replace the layer (e.g. "
                "BatchNorm by GroupNorm, as opacus.validators.ModuleValidator.fix does)"
            )
        net = in_input_space(module, spec)
        x = torch.from_numpy(ctx.fit.x).float()
        y = torch.from_numpy(ctx.fit.y).long()
        hx = torch.from_numpy(ctx.holdout.x).float()
        hy = torch.from_numpy(ctx.holdout.y).long()
        before = _accuracy(in_input_space(parent, spec), hx, hy)
        delta = self.delta if self.delta is not None else 1.0 / (10 * len(x))
        loader = DataLoader(
            TensorDataset(x, y),
            batch_size=min(self.batch_size, len(x)),
            generator=ctx.generator("dp_sgd", "sampling"),
        )
        optimizer = torch.optim.SGD(net.parameters(), lr=self.lr)
        with warnings.catch_warnings():
            # Opacus warns that secure_mode is off: its noise is seeded (same seed, same
            # model), which is right for reproducible patches and wrong for production DP
            # against an adversary who can predict the generator; the lineage says so.
            warnings.simplefilter("ignore", UserWarning)
            engine = opacus.PrivacyEngine(accountant="rdp")
            private, optimizer, loader = engine.make_private_with_epsilon(
                module=net,
                optimizer=optimizer,
                data_loader=loader,
                target_epsilon=self.target_epsilon,
                target_delta=delta,
                epochs=self.epochs,
                max_grad_norm=self.max_grad_norm,
                noise_generator=ctx.generator("dp_sgd", "noise"),
            )
            advance = ctx.progress.task(f"DP-SGD ({self.epochs} epochs)", self.epochs)
            history = []
            for epoch in range(self.epochs):
                private.train()
                for xb, yb in loader:
                    if len(xb) == 0:  # Poisson sampling can draw an empty batch
                        continue
                    optimizer.zero_grad()
                    F.cross_entropy(private(xb), yb).backward()
                    optimizer.step()
                spent = float(engine.get_epsilon(delta))
                history.append(
                    {"epoch": epoch + 1, "clean": _accuracy(net, hx, hy), "epsilon": spent}
                )
                advance(1)
        trained = build_module(ctx.model, 0) if ctx.model.factory else trainable_copy(parent)
        trained.load_state_dict({k: v.detach().clone() for k, v in module.state_dict().items()})
        trained.eval()
        privacy = {
            "mechanism": MECHANISM,
            "epsilon": spent,
            "delta": delta,
            "target_epsilon": self.target_epsilon,
            "noise_multiplier": float(optimizer.noise_multiplier),
            "max_grad_norm": self.max_grad_norm,
            "sample_rate": float(1 / len(loader)),
            "steps": int(engine.accountant.history[-1][2]) if engine.accountant.history else 0,
            "epochs": self.epochs,
            "training_samples": len(x),
            "init": self.init,
            "secure_mode": False,
            "covers": "the patch's training data"
            + ("" if self.init == "scratch" else "; not the parent's (fine-tuned from it)"),
        }
        return PatchResult(
            target=like(ctx.target, trained),
            metrics={
                "before": {"clean": before},
                "after": {"clean": history[-1]["clean"]},
                "privacy": privacy,
            },
            history=history,
        )
