"""Fine-tuning on clean data, fresh adversarial examples and a replay buffer, held near the
previous weights with L2-SP: what `hardenml retrain` runs.

Li, Grandvalet & Davoine 2018, "Explicit Inductive Bias for Transfer Learning with
Convolutional Networks", https://arxiv.org/abs/1802.01483, eq. 3: the loss gains
`alpha / 2 * ||w - w0||^2`, the squared distance of the weights from the starting point
`w0` (here the released model) rather than from zero, so fine-tuning on new examples keeps
what the model knew (no catastrophic forgetting of clean accuracy).

Each batch: L-inf adversarial examples of the clean rows, crafted against the current
weights, plus `replay_fraction` as many rows drawn from the replay buffer (the inputs that
broke earlier models), plus the L2-SP term. The adversarial examples are free AT's by
default (`adversary = "free_at"`, `hardenml.patch.free_at`: each clean row carries its
perturbation from one visit to the next, the training pass's own backward pass steps it,
and each batch is replayed `replays` times, so a scheduled retrain costs a fraction of
PGD-AT's; bench/patch.py has how it compares with PGD-AT on the MNIST CNN at L-inf 0.3),
ATTA's (`"atta"`, `hardenml.patch.atta`: one separate gradient step per batch from that
perturbation), N-FGSM's (`"n_fgsm"`, `hardenml.patch.n_fgsm`: one step from fresh
noise, which did not hold at 0.3 there), all with the watch for catastrophic
overfitting and its recovery on, or PGD-AT's (`adversary = "pgd"`, `pgd_steps` steps,
`hardenml.patch.pgd_at`). The epochs, holdout checks, best checkpoint and early stop are
`AdversarialTraining`'s. Held-out threats never reach it: `eps` is taken from the
non-held-out requirements.

Arguments (keyword-only), beyond ATTA's (`eps`, `step_size`, `start`, `prior`,
`pgd_steps`, `epochs`, `lr`, ...) and N-FGSM's (`noise`, `project`):
    adversary: "free_at" (default), "atta", "n_fgsm" or "pgd" (`[retrain] adversary`);
        `step_size` is that method's step (defaults eps / 2, eps / 2, eps, and
        `2.5 * eps / pgd_steps`).
    replays: how many times in a row free AT trains on each batch (default 2; only for
        "free_at"; Shafahi et al.'s minibatch replay, not the replay buffer).
    replay: path of a replay-buffer .npz (arrays `x` (n, *input_shape), `y` (n,)); None:
        clean and adversarial data only.
    replay_sha256: the sha256 the ledger recorded for it; the file must still match.
    l2sp: alpha, the L2-SP strength (default 0.01; `[retrain] l2sp`).
    replay_fraction: replay rows per batch, as a share of the clean batch (default 0.5).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hardenml.patch.adversarial import Schedule
from hardenml.patch.atta import ATTA
from hardenml.patch.base import PatchContext, PatchError, PatchResult, target_logits, torch_parts
from hardenml.patch.fgsm_rs import FGSMRS
from hardenml.patch.free_at import carried_free_loss
from hardenml.patch.n_fgsm import NFGSM

Adversary = Literal["free_at", "atta", "n_fgsm", "pgd"]


def read_replay(path: Path, sha256: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Arrays `x` and `y` of a replay .npz, without pickle, checked against `sha256`."""
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise PatchError(f"cannot read the replay buffer {path}: {exc.strerror}") from None
    actual = hashlib.sha256(blob).hexdigest()
    if sha256 is not None and actual != sha256:
        raise PatchError(
            f"the replay buffer {path} has sha256 {actual[:12]}, not the {sha256[:12]} "
            "recorded for it"
        )
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            return np.asarray(npz["x"], dtype=np.float32), np.asarray(npz["y"], dtype=np.int64)
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise PatchError(f"the replay buffer {path} is not an .npz of x and y ({exc})") from None


@dataclass(kw_only=True, repr=False, eq=False)
class L2SPFinetune(ATTA):
    summary: ClassVar[str] = (
        "fine-tune on clean, adversarial and replayed examples near the previous weights "
        "(L2-SP, Li et al. 2018)"
    )
    replay: str | None = None
    replay_sha256: str | None = None
    l2sp: float = 0.01
    replay_fraction: float = 0.5
    adversary: Adversary = "free_at"
    # Free AT's minibatch replays (each batch trained on that many times in a row), for
    # adversary = "free_at"; unrelated to the replay buffer.
    replays: int = 2
    # N-FGSM's noise and unclipped step, for adversary = "n_fgsm" (ATTA uses neither).
    noise: float = 2.0
    project: bool = False
    start_in_bounds: ClassVar[bool] = NFGSM.start_in_bounds

    def schedule(self) -> Schedule:
        eps = float(self.eps or 0.0)
        if self.adversary == "pgd":
            return Schedule("pgd", self.step_size or 2.5 * eps / max(self.pgd_steps, 1))
        if self.adversary == "n_fgsm":
            return Schedule("fgsm", self.step_size or eps)
        return super().schedule()

    def batch_replays(self) -> int:
        return self.replays if self.adversary == "free_at" else 1

    def run(self, ctx: PatchContext) -> PatchResult:
        if self.adversary not in ("free_at", "atta", "n_fgsm", "pgd"):
            raise PatchError(
                f"adversary must be 'free_at', 'atta', 'n_fgsm' or 'pgd', got {self.adversary!r}"
            )
        if self.replays < 1:
            raise PatchError(f"replays must be at least 1, got {self.replays}")
        if self.init != "finetune":
            raise PatchError("l2sp_finetune holds the weights near the parent's: init = 'finetune'")
        if self.l2sp < 0 or not 0 <= self.replay_fraction <= 1:
            raise PatchError("l2sp must be at least 0 and replay_fraction within [0, 1]")
        parent, spec = torch_parts(ctx.target)
        self.anchor_ = [p.detach().clone().to(ctx.target.device) for p in parent.parameters()]
        self.replay_x_ = np.zeros((0, *spec.shape), dtype=np.float32)
        self.replay_y_ = np.zeros(0, dtype=np.int64)
        if self.replay is not None:
            self.replay_x_, self.replay_y_ = read_replay(Path(self.replay), self.replay_sha256)
            if self.replay_x_.shape[1:] != tuple(spec.shape):
                raise PatchError(
                    f"the replay buffer holds inputs of shape {self.replay_x_.shape[1:]}, the "
                    f"model takes {tuple(spec.shape)}"
                )
        before = self._replay_accuracy(ctx.target)
        result = super().run(ctx)
        result.metrics["replay_n"] = len(self.replay_y_)
        result.metrics["replay_accuracy"] = {
            "before": before,
            "after": self._replay_accuracy(result.target),
        }
        result.metrics["l2sp"] = self.l2sp
        result.metrics["adversary"] = self.adversary
        result.metrics["l2sp_distance"] = self._distance(torch_parts(result.target)[0])
        return result

    def _replay_accuracy(self, target: Any) -> float | None:
        if not len(self.replay_y_):
            return None
        return float(
            np.mean(target_logits(target, self.replay_x_).argmax(axis=1) == self.replay_y_)
        )

    @torch.no_grad()
    def _distance(self, module: nn.Module) -> float:
        """||w - w0||^2 of the kept weights: how far the fine-tune moved from the parent."""
        return float(
            sum(
                ((p - a) ** 2).sum() for p, a in zip(module.parameters(), self.anchor_, strict=True)
            )
        )

    def loss(
        self, net: nn.Module, x: Tensor, y: Tensor, schedule: Schedule, generator: torch.Generator
    ) -> Tensor:
        # N-FGSM's step is FGSM-RS's with N-FGSM's settings; ATTA's loss hands PGD (chosen,
        # or after a recovery) to FGSM-RS's as well. Free AT's step rides on this loss's
        # own backward pass, which the replay and L2-SP terms below share.
        if self.adversary == "n_fgsm":
            adversarial = FGSMRS.loss(self, net, x, y, schedule, generator)
        elif self.adversary == "free_at" and schedule.method == "fgsm":
            adversarial = carried_free_loss(self, net, x, y, schedule)
        else:
            adversarial = super().loss(net, x, y, schedule, generator)
        total = adversarial
        n_replay = round(self.replay_fraction * len(y))
        if n_replay and len(self.replay_y_):
            pick = torch.randint(0, len(self.replay_y_), (n_replay,), generator=generator)
            rx = torch.from_numpy(self.replay_x_[pick.numpy()]).to(x.device)
            ry = torch.from_numpy(self.replay_y_[pick.numpy()]).to(x.device)
            share = n_replay / (n_replay + len(y))
            total = (1 - share) * adversarial + share * F.cross_entropy(net(rx), ry)
        if self.l2sp > 0:
            # net may be Normalize + module: its parameters are the module's, in order.
            drift = sum(
                ((p - a) ** 2).sum() for p, a in zip(net.parameters(), self.anchor_, strict=True)
            )
            total = total + 0.5 * self.l2sp * drift
        return total
