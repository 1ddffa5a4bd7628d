"""A stochastic model seen through its declared decision rule, with EOT gradients.

A randomised defence (fresh input noise, random resizing, dropout at inference) answers the
same input differently on every call. Judged by one call, it is misjudged twice: one call
is not the decision the deployment makes, and one draw per gradient step is not the
gradient an adaptive attacker uses. Athalye, Carlini and
Wagner 2018, "Obfuscated Gradients Give a False Sense of Security"
(https://arxiv.org/abs/1802.00420, section 4.3), attack such models with expectation over
transformation (EOT): gradients averaged over the randomness. `StochasticTarget` wraps any
target so that every room sees one deterministic-rule model:

- without gradients (clean accuracy, the scoring of every attack, black-box attacks), the
  output is the rule over `samples` (K) calls: `mean`, the log of the mean of the K calls'
  probabilities; `vote`, the log of the vote shares, where the mean probability over
  `2K` breaks ties and gives score-based attacks a slope on a vote plateau without
  reordering two classes whose votes differ (those differ by at least `1/K`);
- with gradients (the input requires grad), the output is the mean of the log-softmax of
  `eot_samples` (M) calls, each its own forward pass, so autograd differentiates every
  loss through all M draws. For cross-entropy this is EOT proper up to a normaliser: the
  CE of the mean log-softmax is the mean of the M draws' CE plus `log sum_c` of the
  classes' geometric-mean probabilities, a term near zero when the draws agree.
  Shift-invariant losses (DLR, margins) read it as the mean of the draws' logits. We
  measured it against the alternative, the log of the mean probabilities (the mean rule
  itself, estimated from M draws): on the digits MLP with Gaussian input noise (sigma
  0.3-0.5, L-inf 0.1-0.15, 5 seeds, 450 samples), PGD left 1.5-2 points fewer samples
  standing through the mean log-softmax, APGD-DLR within 1.5 points either way, and PGD
  through it did at least as well as the textbook loop that averages the M draws'
  cross-entropy gradients. The vote has no gradient; the same mean is its surrogate.

The model's own randomness is seeded: around each call, torch's global generator (and the
target's CUDA generator), numpy's and Python's are set from a seed derived from the scan's
seed, the content of the batch and how often that content was sent before, then restored.
The same scan thus sends the same draws, whichever batch a resumed scan starts at; it does
depend on how the samples are grouped into calls (`scan.batch_size`, a threat's
`batch_size`, `scan.memory_mb`), because the model draws its noise for a whole batch at
once. Randomness the model takes from elsewhere (its own generator, a remote server)
cannot be seeded this way; `hardenml.scan.stochastic` tells when.

`queries` counts every underlying call: a decision costs K inputs per sample, a gradient
step M.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from hardenml.stats import derive_seed
from hardenml.targets.base import Target

Rule = Literal["mean", "vote"]


@contextmanager
def seeded_randomness(seed: int, device: torch.device) -> Iterator[None]:
    """torch's (CPU, and `device` when it is a GPU), numpy's and Python's global generators
    seeded from `seed` inside the block and restored to their former states after it."""
    cuda = [device] if device.type == "cuda" else []
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)


def content_digest(x: Tensor) -> str:
    """A short hash of a batch's shape, dtype and values: which batch a call was."""
    values = x.detach().to("cpu").contiguous()
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{tuple(values.shape)}|{values.dtype}".encode())
    digest.update(values.numpy().tobytes())
    return digest.hexdigest()


def log_mean_probabilities(outputs: list[Tensor]) -> Tensor:
    """log of the mean of softmax(outputs[k]) over k, computed stably, shape `(n, classes)`."""
    stacked = torch.stack([torch.log_softmax(out, dim=1) for out in outputs])
    return torch.logsumexp(stacked, dim=0) - math.log(len(outputs))


def log_vote_shares(outputs: list[Tensor]) -> Tensor:
    """log of each class's share of the K votes, ties broken by the mean probability."""
    votes = torch.stack([out.argmax(dim=1) for out in outputs])
    classes = outputs[0].shape[1]
    counts = torch.nn.functional.one_hot(votes, classes).sum(dim=0).to(outputs[0].dtype)
    shares = counts / len(outputs)
    mean_probs = log_mean_probabilities(outputs).exp()
    scores = shares + mean_probs / (2 * len(outputs))
    return scores.clamp_min(torch.finfo(scores.dtype).tiny).log()


class StochasticTarget(Target):
    """`inner` decided by `rule` over `samples` calls, with EOT gradients over `eot_samples`.

    Arguments (keyword-only): `rule` ("mean" or "vote"), `samples` K >= 1, `eot_samples`
    M >= 1, `seed` (the scan's seed; the draws of each call derive from it).
    """

    stochastic = True

    def __init__(
        self, inner: Target, *, rule: Rule, samples: int, eot_samples: int, seed: int
    ) -> None:
        if samples < 1 or eot_samples < 1:
            raise ValueError("samples and eot_samples must be at least 1")
        super().__init__(
            input_spec=inner.input_spec,
            classes=inner.classes,
            has_gradients=inner.has_gradients,
            device=inner.device,
        )
        self.inner = inner
        self.rule = rule
        self.samples = samples
        self.eot_samples = eot_samples
        self.seed = seed
        self.memory_budget = inner.memory_budget
        # Continues the inner counter, so a caller's before/after difference spans the wrap.
        self.queries = inner.queries
        # How many times each batch content was sent: the draws of a repeated call differ.
        self.sent_: dict[str, int] = {}

    @property
    def no_gradients_reason(self) -> str:
        return self.inner.no_gradients_reason

    def logits(self, x: Tensor) -> Tensor:
        before = self.inner.queries
        out = super().logits(x)
        # The base counted this call once per input; the model answered K (or M) times.
        self.queries += self.inner.queries - before - x.shape[0]
        return out

    def _forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            draws = self.draws(x, self.eot_samples)
            return torch.stack([torch.log_softmax(out, dim=1) for out in draws]).mean(dim=0)
        outputs = self.draws(x, self.samples)
        if self.rule == "mean":
            return log_mean_probabilities(outputs)
        return log_vote_shares(outputs)

    def draws(self, x: Tensor, count: int) -> list[Tensor]:
        """`count` consecutive calls of the model on `x`, under this call's seed."""
        digest = content_digest(x)
        occurrence = self.sent_.get(digest, 0)
        self.sent_[digest] = occurrence + 1
        with seeded_randomness(derive_seed(self.seed, "model", digest, occurrence), self.device):
            return [self.inner.logits(x) for _ in range(count)]
