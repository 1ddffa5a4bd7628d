"""Shifts in what the model says: its class frequencies and its confidence.

- `PredictionShift`: the predicted-class counts of the window against those of the
  reference, as a 2 x k contingency table, by the G-test of independence (the
  log-likelihood ratio; Sokal and Rohlf, Biometry, ch. 17; scipy's `chi2_contingency` with
  `lambda_="log-likelihood"`). A two-sample test rather than goodness of fit against the
  reference's shares, because those shares are themselves estimated from a finite sample.
  Classes seen in neither sample are dropped (they carry no evidence and a zero row would
  make the expected counts undefined).
- `ConfidenceShift`: the two-sample KS test on the max probability (the whole
  distribution: a model that grows overconfident on some inputs and unsure on others keeps
  its mean) and the change of the mean confidence with Welch's interval (Welch 1947,
  https://doi.org/10.1093/biomet/34.1-2.28), which does not assume equal variances.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import chi2_contingency, ks_2samp, ttest_ind

from hardenml.monitor.readings import (
    DetectorReading,
    MonitorError,
    Window,
    as_probabilities,
    check_alpha,
    require_rows,
)


class PredictionShift:
    """G-test of the window's predicted-class counts against the reference's.

    `reference_probabilities`: `(n, k)` model outputs on the reference data. Arguments
    (keyword-only): `alpha` (default 0.05), `class_names` (default "0", "1", ...),
    `min_window` (fewer rows: no reading). One reading, `feature` None; its detail names
    the class whose share moved most.
    """

    name = "prediction_shift"

    def __init__(
        self,
        reference_probabilities: np.ndarray,
        *,
        alpha: float = 0.05,
        class_names: list[str] | None = None,
        min_window: int = 20,
    ) -> None:
        check_alpha(alpha)
        self.alpha = alpha
        self.min_window = min_window
        probs = as_probabilities(reference_probabilities, "the reference probabilities")
        require_rows(probs, 1, "the reference probabilities")
        classes = probs.shape[1]
        if class_names is not None and len(class_names) != classes:
            raise MonitorError(f"{len(class_names)} class names for {classes} classes")
        self.class_names = [str(i) for i in range(classes)] if class_names is None else class_names
        self.reference_counts_ = np.bincount(probs.argmax(axis=1), minlength=classes)

    def evaluate(self, window: Window) -> list[DetectorReading]:
        probs = window.probability_rows(self.name)
        if probs.shape[1] != self.reference_counts_.shape[0]:
            raise MonitorError(
                f"the window has {probs.shape[1]} classes, the reference "
                f"{self.reference_counts_.shape[0]}"
            )
        n = probs.shape[0]
        if n < self.min_window:
            return []
        counts = np.bincount(probs.argmax(axis=1), minlength=probs.shape[1])
        table = np.stack([self.reference_counts_, counts])
        seen = table.sum(axis=0) > 0
        ref_share = self.reference_counts_ / self.reference_counts_.sum()
        share = counts / n
        moved = int(np.argmax(np.abs(share - ref_share)))
        if seen.sum() < 2:
            g, p_value = 0.0, 1.0  # one class in both samples: nothing can differ
        else:
            result = chi2_contingency(table[:, seen], correction=False, lambda_="log-likelihood")
            g, p_value = float(result.statistic), float(result.pvalue)
        return [
            DetectorReading(
                detector=self.name,
                feature=None,
                statistic=g,
                p_value=p_value,
                flagged=p_value < self.alpha,
                n=n,
                detail=(
                    f"G-test over {int(seen.sum())} classes; largest move: class "
                    f"{self.class_names[moved]} {ref_share[moved]:.1%} -> {share[moved]:.1%}"
                ),
            )
        ]


class ConfidenceShift:
    """KS on the max probability, and the mean confidence's change with Welch's interval.

    `reference_probabilities`: `(n, k)` model outputs on the reference data. Arguments
    (keyword-only): `alpha` (default 0.05, each reading), `confidence` of the interval
    (default 0.95), `min_window`. Two readings: `feature` "max_probability" (KS distance)
    and "mean_confidence" (window mean minus reference mean, with its interval).
    """

    name = "confidence_shift"

    def __init__(
        self,
        reference_probabilities: np.ndarray,
        *,
        alpha: float = 0.05,
        confidence: float = 0.95,
        min_window: int = 20,
    ) -> None:
        check_alpha(alpha)
        if not 0.5 < confidence < 1:
            raise MonitorError(f"confidence must lie in (0.5, 1), got {confidence}")
        self.alpha = alpha
        self.confidence = confidence
        self.min_window = min_window
        probs = as_probabilities(reference_probabilities, "the reference probabilities")
        require_rows(probs, 2, "the reference probabilities")
        self.reference_confidence_ = probs.max(axis=1)

    def evaluate(self, window: Window) -> list[DetectorReading]:
        probs = window.probability_rows(self.name)
        n = probs.shape[0]
        if n < max(self.min_window, 2):
            return []
        conf = probs.max(axis=1)
        reference = self.reference_confidence_
        ks = ks_2samp(reference, conf)
        change = float(conf.mean() - reference.mean())
        if np.ptp(conf) == 0 and np.ptp(reference) == 0:
            # Welch's t is undefined on two constant samples: equal means, nothing moved.
            p_mean, interval = (1.0 if change == 0 else 0.0), (change, change)
        else:
            welch = ttest_ind(conf, reference, equal_var=False)
            bounds = welch.confidence_interval(self.confidence)
            p_mean, interval = float(welch.pvalue), (float(bounds.low), float(bounds.high))
        return [
            DetectorReading(
                detector=self.name,
                feature="max_probability",
                statistic=float(ks.statistic),
                p_value=float(ks.pvalue),
                flagged=float(ks.pvalue) < self.alpha,
                n=n,
                detail=f"KS distance {float(ks.statistic):.3f} of the max probability",
            ),
            DetectorReading(
                detector=self.name,
                feature="mean_confidence",
                statistic=change,
                p_value=p_mean,
                flagged=p_mean < self.alpha,
                n=n,
                detail=(
                    f"mean confidence {reference.mean():.3f} -> {conf.mean():.3f} "
                    f"({change:+.3f}, {self.confidence:.0%} Welch interval "
                    f"[{interval[0]:+.3f}, {interval[1]:+.3f}])"
                ),
                interval=interval,
            ),
        ]
