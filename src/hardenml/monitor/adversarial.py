"""An adversarial-input score: how much the model's output moves under small random noise.

Adversarial examples found by gradient or score-based search sit just across a decision
boundary, so small random noise moves the model's output far more than it does on natural
inputs, which lie deep inside their class region: Hu, Yu, Guo, Chao and Weinberger 2019,
"A New Defense Against Adversarial Images: Turning a Weakness into a Strength",
https://arxiv.org/abs/1910.07629, and Roth, Kilcher and Hofmann 2019, "The Odds are Odd",
https://arxiv.org/abs/1902.04818. The score of an input is the mean total-variation
distance between its predicted distribution and that of `draws` noisy copies
(Gaussian noise of standard deviation `noise_std` in the input space, clipped to the
bounds); it lies in [0, 1]. The noise directions are one seeded bank, drawn once, so an
input's score is a function of the input alone.

The threshold is the (1 - `false_positive_rate`) quantile of the scores of the reference
inputs, so about that share of natural traffic scores above it. A window is flagged when
the share of its inputs above the threshold is confidently above that rate: the lower end
of its Wilson interval (`hardenml.stats.wilson_interval`) exceeds it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.stats import binomtest

from hardenml.monitor.readings import (
    DetectorReading,
    MonitorError,
    Window,
    as_probabilities,
    as_rows,
    require_rows,
)
from hardenml.stats import derive_seed, wilson_interval
from hardenml.targets import Target

# Rows per call of the predict function: a window of a few hundred inputs times `draws`
# noisy copies is sent in pieces this size, bounding the memory of one call.
_PREDICT_ROWS = 4096

Predict = Callable[[np.ndarray], np.ndarray]


def target_predict(target: Target) -> Predict:
    """A predict function over a `Target`: flat rows `(n, d)` in, probabilities `(n, k)` out."""
    shape = target.input_spec.shape

    @torch.no_grad()
    def predict(rows: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(rows, dtype=target.input_spec.dtype).reshape(-1, *shape)
        return torch.softmax(target.logits(x.to(target.device)), dim=1).double().cpu().numpy()

    return predict


class AdversarialScore:
    """Prediction instability under noise, thresholded at a calibrated false-positive rate.

    `predict`: flat rows `(n, d)` to probabilities `(n, k)` (`target_predict` builds one
    from a `Target`). `reference`: natural inputs `(n, *input shape)` to calibrate on,
    ideally not the model's training data. Arguments (keyword-only):
        noise_std: the noise's standard deviation in input units (default 0.05).
        draws: noisy copies per input (default 8).
        false_positive_rate: the share of natural inputs over the threshold (default 0.05).
        bounds: the input range the noisy copies are clipped to (default (0, 1)).
        confidence: of the Wilson interval (default 0.95).
        seed: the noise; the same input gets the same score.
        min_window: fewer rows: no reading.
        max_window: only the window's most recent rows are scored (default 500): each costs
            `draws + 1` model calls.
    """

    name = "adversarial_score"

    def __init__(
        self,
        predict: Predict,
        reference: np.ndarray,
        *,
        noise_std: float = 0.05,
        draws: int = 8,
        false_positive_rate: float = 0.05,
        bounds: tuple[float, float] = (0.0, 1.0),
        confidence: float = 0.95,
        seed: int = 0,
        min_window: int = 20,
        max_window: int = 500,
    ) -> None:
        if noise_std <= 0 or draws < 1:
            raise MonitorError("noise_std must be positive and draws at least 1")
        if not 0 < false_positive_rate < 1:
            raise MonitorError(f"false_positive_rate must lie in (0, 1), got {false_positive_rate}")
        self.predict = predict
        self.noise_std = noise_std
        self.draws = draws
        self.false_positive_rate = false_positive_rate
        self.bounds = bounds
        self.confidence = confidence
        self.seed = seed
        self.min_window = min_window
        self.max_window = max_window
        if max_window < min_window:
            raise MonitorError("max_window must be at least min_window")
        rows = as_rows(reference, "the reference data (adversarial score)")
        need = int(np.ceil(1 / false_positive_rate))
        require_rows(
            rows, need, f"the reference data at false_positive_rate {false_positive_rate:g}"
        )
        self.dims_ = rows.shape[1]
        # One fixed bank of noise directions, drawn once: an input's score then depends on
        # the input alone, not on the batch it came in or on how many were scored before.
        rng = np.random.default_rng(derive_seed(seed, self.name))
        self.noise_ = rng.normal(0.0, noise_std, (draws, self.dims_))
        self.reference_scores_ = self.scores(rows)
        # "higher": the threshold is a score some reference input reached, so at most the
        # stated share of the reference lies strictly above it.
        self.threshold_ = float(
            np.quantile(self.reference_scores_, 1 - false_positive_rate, method="higher")
        )

    def scores(self, inputs: np.ndarray) -> np.ndarray:
        """`(n,)` instability scores in [0, 1] of inputs `(n, *input shape)`."""
        rows = as_rows(inputs, "the inputs to score")
        if rows.shape[0] == 0:
            return np.zeros(0)
        if rows.shape[1] != self.dims_:
            raise MonitorError(
                f"inputs with {rows.shape[1]} features; the reference has {self.dims_}"
            )
        lo, hi = self.bounds
        clean = self._probabilities(rows)
        noisy_rows = np.clip(rows[:, None, :] + self.noise_[None, :, :], lo, hi)
        noisy = self._probabilities(noisy_rows.reshape(-1, self.dims_))
        noisy = noisy.reshape(rows.shape[0], self.draws, -1)
        total_variation = 0.5 * np.abs(noisy - clean[:, None, :]).sum(axis=2)
        return total_variation.mean(axis=1)

    def _probabilities(self, rows: np.ndarray) -> np.ndarray:
        parts = [
            as_probabilities(
                self.predict(rows[i : i + _PREDICT_ROWS]), "the predict function's output"
            )
            for i in range(0, rows.shape[0], _PREDICT_ROWS)
        ]
        return np.concatenate(parts)

    def evaluate(self, window: Window) -> list[DetectorReading]:
        rows = window.flat_inputs(self.name)[-self.max_window :]
        n = rows.shape[0]
        if n < self.min_window:
            return []
        over = int((self.scores(rows) > self.threshold_).sum())
        low, high = wilson_interval(over, n, self.confidence)
        p_value = float(binomtest(over, n, self.false_positive_rate, alternative="greater").pvalue)
        return [
            DetectorReading(
                detector=self.name,
                feature=None,
                statistic=over / n,
                p_value=p_value,
                flagged=low > self.false_positive_rate,
                n=n,
                detail=(
                    f"{over} of {n} inputs unstable under noise (std {self.noise_std:g}, "
                    f"{self.draws} draws) beyond the threshold {self.threshold_:.3g}, "
                    f"calibrated to {self.false_positive_rate:.0%} of the reference; "
                    f"{self.confidence:.0%} Wilson interval [{low:.3f}, {high:.3f}]"
                ),
                interval=(low, high),
            )
        ]
