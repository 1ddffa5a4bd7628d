"""The loop shared by the adversarial-training patches (PGD-AT, TRADES, FGSM-RS).

Each subclass supplies `loss(net, x, y, schedule, generator)`, the training loss on one
batch; this module runs the epochs and, after each one, measures clean, FGSM and PGD
accuracy on the holdout at the training budget. It keeps the checkpoint with the best
PGD (robust) accuracy, stops early when that has not improved for `patience` epochs,
and watches for catastrophic overfitting: Wong, Rice & Kolter 2020, "Fast is better than
free: Revisiting adversarial training", https://arxiv.org/abs/2001.03994, Sec. 5: the
model learns to defeat the single-step attack it trains on, so its FGSM accuracy rises
while its PGD accuracy collapses within an epoch or two. When that is seen the run rolls
back to the best checkpoint (weights and optimiser) and the subclass's `recover` says how
to go on.

Inputs live in the raw input space: attacks and budgets never see the normalisation.
TorchScript models train the same way (their parameters take gradients through the
compiled forward) and are written back as TorchScript. A run whose best checkpoint is the
start (no epoch beat the parent on the holdout) raises `PatchUnchanged`: there is no new
model to write.
"""

from __future__ import annotations

import copy
from abc import abstractmethod
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from hardenml.patch.base import (
    Patch,
    PatchContext,
    PatchError,
    PatchResult,
    PatchUnchanged,
    build_module,
    in_input_space,
    like,
    torch_parts,
    trainable_copy,
)
from hardenml.threats import projected_gradient
from hardenml.train import LrSchedule, train_classifier

Init = Literal["finetune", "scratch"]
LrScheduleName = Literal["flat", "cyclic"]


@dataclass
class Schedule:
    """What the loss uses this epoch; `recover` may change it after a rollback."""

    method: str
    step_size: float
    bounds: tuple[float, float] = (0.0, 1.0)
    stop: bool = False
    # Share of eps (and of the step) used this epoch: below 1 during the warm-up.
    scale: float = 1.0


def linf_pgd(
    net: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    bounds: tuple[float, float],
    generator: torch.Generator | None,
) -> Tensor:
    """L-inf PGD on cross-entropy from a uniform random start (no start without a
    generator: then one step of length `step_size` from x is FGSM): the threats' own loop
    (`projected_gradient`) on the network being trained. Returns detached inputs inside
    the ball and the bounds; `net` should be in eval mode."""
    return projected_gradient(
        net,
        x,
        y,
        bounds=bounds,
        norm="linf",
        budget=eps,
        steps=steps,
        step_size=step_size,
        restarts=1,
        start_random=generator is not None,
        early_stop=False,
        generator=generator,
    ).detach()


@torch.no_grad()
def _accuracy(net: nn.Module, x: Tensor, y: Tensor) -> float:
    return float((net(x).argmax(dim=1) == y).float().mean())


def holdout_accuracies(
    net: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    steps: int,
    bounds: tuple[float, float],
    seed: int,
    batch_size: int = 256,
) -> dict[str, float]:
    """Clean, FGSM and PGD accuracy; the same PGD starts every call (fixed seed), so
    epochs compare on equal terms."""
    net.eval()
    gen = torch.Generator().manual_seed(seed)
    sums = {"clean": 0.0, "fgsm": 0.0, "pgd": 0.0}
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        share = len(xb) / len(x)
        sums["clean"] += share * _accuracy(net, xb, yb)
        fgsm = linf_pgd(net, xb, yb, eps=eps, step_size=eps, steps=1, bounds=bounds, generator=None)
        sums["fgsm"] += share * _accuracy(net, fgsm, yb)
        pgd = linf_pgd(
            net,
            xb,
            yb,
            eps=eps,
            step_size=2.5 * eps / steps,
            steps=steps,
            bounds=bounds,
            generator=gen,
        )
        sums["pgd"] += share * _accuracy(net, pgd, yb)
    return sums


# Below this absolute drop, a PGD-accuracy change on a small holdout is noise, not a collapse.
MIN_COLLAPSE = 0.1


def catastrophic_overfitting(
    best: dict[str, float], now: dict[str, float], drop: float = 0.5, gap: float = 0.3
) -> bool:
    """Wong et al.'s signature of catastrophic overfitting, on holdout accuracies.

    Either PGD accuracy lost at least a share `drop` of its value at the best checkpoint
    (and at least `MIN_COLLAPSE` in absolute terms) while FGSM accuracy did not fall, or
    FGSM accuracy stands at least `gap` above a PGD accuracy that is not improving: the
    model has learned to defeat the single-step attack it trains on without becoming
    robust (a run can overfit this way from its first epochs, before PGD accuracy ever
    rose). A wide gap while PGD accuracy climbs is ordinary early adversarial training,
    where one step is still much weaker than many; an epoch later tells them apart.
    """
    lost = best["pgd"] - now["pgd"]
    collapsed = lost >= max(drop * best["pgd"], MIN_COLLAPSE) and now["fgsm"] >= best["fgsm"]
    return collapsed or (now["fgsm"] - now["pgd"] >= gap and now["pgd"] <= best["pgd"])


@dataclass(kw_only=True, repr=False, eq=False)
class AdversarialTraining(Patch):
    """The settings every adversarial trainer shares, as keyword-only dataclass fields;
    subclasses add their own fields and write `loss` and `schedule`; single-step methods
    also `overfitting_watch` and `recover`. See `hardenml.patch.pgd_at` for each field."""

    kinds: ClassVar[tuple[str, ...]] = ("pytorch", "torchscript")
    addresses: ClassVar[tuple[str, ...]] = ("gradient", "score-based", "decision-based", "tabular")

    eps: float | None = None
    epochs: int = 5
    lr: float = 1e-3
    lr_schedule: LrScheduleName = "flat"
    batch_size: int = 64
    init: Init = "finetune"
    patience: int = 3
    eval_steps: int = 10
    warmup: int = 0

    def params(self) -> dict[str, Any]:
        """eps, then the method's own settings, then the shared training ones (the order
        of the repr and the lineage record, and the order a reader looks for them)."""
        values = super().params()
        shared = [f.name for f in fields(AdversarialTraining)]
        own = {k: v for k, v in values.items() if k not in shared}
        return {"eps": self.eps, **own, **{k: values[k] for k in shared if k != "eps"}}

    @abstractmethod
    def schedule(self) -> Schedule:
        """The method and step size the run starts with."""

    @abstractmethod
    def loss(
        self, net: nn.Module, x: Tensor, y: Tensor, schedule: Schedule, generator: torch.Generator
    ) -> Tensor:
        """The training loss on one batch; `net` arrives in train mode and must be in train
        mode for the forward pass whose loss is returned."""

    def before_batch(self, rows: Tensor) -> None:
        """Told which rows of the fit set the next `loss` call is on; nothing by default (a
        method that carries a perturbation per training example looks its rows up)."""

    def batch_replays(self) -> int:
        """Optimiser steps taken on each batch in a row (1; free adversarial training
        replays each batch, `hardenml.patch.free_at`)."""
        return 1

    def overfitting_watch(self, schedule: Schedule) -> tuple[float, float] | None:
        """(drop, gap) thresholds of `catastrophic_overfitting` while `schedule` can overfit
        that way; None (the default) for multi-step methods, which do not."""
        return None

    def recover(self, schedule: Schedule, times: int) -> str:
        """After the `times`-th rollback for catastrophic overfitting: change the schedule
        (or set `schedule.stop`) and say what was done."""
        schedule.stop = True
        return "rolled back to the best checkpoint and stopped"

    def lr_at(self) -> LrSchedule | None:
        """None for a flat rate; for "cyclic", Wong et al.'s one cycle: linear from 0 up to
        `lr` at 2/5 of the epochs, then down to 0 at the end."""
        if self.lr_schedule == "flat":
            return None
        peak, top, end = self.lr, 0.4 * self.epochs, float(self.epochs)
        return lambda t: peak * (t / top if t <= top else max(0.0, (end - t) / (end - top)))

    def _check(self) -> float:
        if self.eps is None or self.eps <= 0:
            raise PatchError(
                f"{type(self).__name__} needs a positive eps (the L-inf training budget); "
                "pass --set eps=... or declare a policy.robust requirement to take it from"
            )
        if self.epochs < 1 or self.batch_size < 1 or self.eval_steps < 1 or self.warmup < 0:
            raise PatchError(
                "epochs, batch_size and eval_steps must be at least 1, warmup at least 0"
            )
        if self.lr_schedule not in ("flat", "cyclic"):
            raise PatchError(f"lr_schedule must be 'flat' or 'cyclic', got {self.lr_schedule!r}")
        if self.init not in ("finetune", "scratch"):
            raise PatchError(f"init must be 'finetune' or 'scratch', got {self.init!r}")
        return float(self.eps)

    def run(self, ctx: PatchContext) -> PatchResult:
        eps = self._check()
        parent, spec = torch_parts(ctx.target)
        module = (
            trainable_copy(parent) if self.init == "finetune" else build_module(ctx.model, ctx.seed)
        )
        device = ctx.target.device
        net = in_input_space(module, spec).to(device)
        bounds = spec.bounds
        hx = torch.from_numpy(ctx.holdout.x).to(device)
        hy = torch.from_numpy(ctx.holdout.y).to(device)
        eval_seed = ctx.seed_for("holdout attacks")

        def measure() -> dict[str, float]:
            return holdout_accuracies(
                net, hx, hy, eps=eps, steps=self.eval_steps, bounds=bounds, seed=eval_seed
            )

        def ramp(epoch: int) -> float:
            # Linear warm-up: epoch e < warmup trains at (e + 1) / (warmup + 1) of eps.
            return min(1.0, (epoch + 1) / (self.warmup + 1))

        schedule = replace(self.schedule(), bounds=bounds, scale=ramp(0))
        start = measure()
        history: list[dict[str, Any]] = [{"epoch": 0, **start, "method": "start"}]
        events: list[dict[str, Any]] = []
        best: dict[str, Any] = {"epoch": 0, **start, "net": copy.deepcopy(net.state_dict())}
        best_opt: dict[str, Any] | None = None
        stale = 0
        recoveries = 0
        gen = ctx.generator("training attacks")

        def after_epoch(epoch: int, _: nn.Module, opt: torch.optim.Optimizer) -> bool:
            stop = judge(epoch, opt)
            schedule.scale = ramp(epoch + 1)
            return stop

        def judge(epoch: int, opt: torch.optim.Optimizer) -> bool:
            nonlocal best_opt, stale, recoveries
            now = measure()
            history.append(
                {
                    "epoch": epoch + 1,
                    **now,
                    "method": schedule.method,
                    "train_eps": eps * schedule.scale,
                }
            )
            # Watched at the full budget only: the holdout is attacked at the full eps.
            watch = self.overfitting_watch(schedule) if schedule.scale >= 1.0 else None
            if watch is not None and catastrophic_overfitting(best, now, *watch):
                recoveries += 1
                net.load_state_dict(best["net"])
                if best_opt is not None:
                    opt.load_state_dict(best_opt)
                else:
                    opt.state.clear()  # the best is the start: back to a fresh optimiser
                action = self.recover(schedule, recoveries)
                events.append(
                    {
                        "kind": "catastrophic_overfitting",
                        "epoch": epoch + 1,
                        "pgd_accuracy": now["pgd"],
                        "fgsm_accuracy": now["fgsm"],
                        "best_epoch": best["epoch"],
                        "best_pgd_accuracy": best["pgd"],
                        "action": action,
                    }
                )
                stale = 0
                return schedule.stop
            # Ties go to the later epoch: at a large budget PGD accuracy can sit at zero for
            # a while before training moves it, and the start must not win by default.
            if now["pgd"] >= best["pgd"]:
                best.update(epoch=epoch + 1, **now, net=copy.deepcopy(net.state_dict()))
                best_opt = copy.deepcopy(opt.state_dict())
                stale = 0
                return False
            # Holdout accuracy is measured at the full eps, so the warm-up is no plateau.
            if epoch >= self.warmup:
                stale += 1
            return stale >= self.patience

        train_classifier(
            net,
            ctx.fit.x,
            ctx.fit.y,
            epochs=self.epochs,
            lr=self.lr,
            lr_at=self.lr_at(),
            batch_size=self.batch_size,
            seed=ctx.seed,
            device=device,
            progress=ctx.progress,
            loss_fn=lambda m, xb, yb: self.loss(m, xb, yb, schedule, gen),
            after_epoch=after_epoch,
            label=type(self).__name__,
            before_batch=self.before_batch,
            replays=self.batch_replays(),
        )
        if best["epoch"] == 0:
            raise PatchUnchanged(self._unchanged(history, events), history=history, events=events)
        net.load_state_dict(best["net"])
        net.eval()
        metrics = {
            "best_epoch": best["epoch"],
            "epochs_run": len(history) - 1,
            "holdout_n": len(ctx.holdout),
            "eps": eps,
            "init": self.init,
            "before": start,
            "after": {k: best[k] for k in ("clean", "fgsm", "pgd")},
            "catastrophic_overfitting": len(events),
        }
        return PatchResult(
            target=like(ctx.target, module), metrics=metrics, history=history, events=events
        )

    def _unchanged(self, history: list[dict[str, Any]], events: list[dict[str, Any]]) -> str:
        """Why nothing was kept, with the holdout PGD accuracy of every epoch."""
        start = "the parent" if self.init == "finetune" else "the untrained initialisation"
        epochs = ", ".join(f"epoch {h['epoch']} {h['pgd']:.3f}" for h in history[1:])
        overfit = [str(e["epoch"]) for e in events if e["kind"] == "catastrophic_overfitting"]
        seen = (
            f"; catastrophic overfitting at epoch {', '.join(overfit)}, rolled back"
            if overfit
            else ""
        )
        return (
            f"{type(self).__name__} kept no trained epoch: none beat {start} on holdout PGD "
            f"accuracy at eps {self.eps:g} (start {history[0]['pgd']:.3f}; {epochs}{seen}), "
            "so there is no new model: nothing was written or recorded. Try a lower lr, more "
            "epochs or patience, or a smaller eps (or warmup)"
        )
