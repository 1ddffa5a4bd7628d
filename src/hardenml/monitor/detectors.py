"""The monitor's detectors, one import away: each is built against reference data and
judges one `Window` of live traffic at a time, returning `DetectorReading`s.

- `FeatureDrift` (`hardenml.monitor.drift`): KS per feature, Holm-corrected.
- `MMDDrift` (`hardenml.monitor.mmd`): Gaussian-kernel MMD^2 with a permutation p-value.
- `PredictionShift`, `ConfidenceShift` (`hardenml.monitor.outputs`): class frequencies
  (G-test) and confidence (KS, Welch interval of the mean).
- `AdversarialScore` (`hardenml.monitor.adversarial`): instability under random noise.
- `QueryCampaign` (`hardenml.monitor.campaign`): near-duplicate queries per client.
"""

from __future__ import annotations

from hardenml.monitor.adversarial import AdversarialScore, target_predict
from hardenml.monitor.campaign import QueryCampaign
from hardenml.monitor.drift import FeatureDrift, holm_adjust
from hardenml.monitor.mmd import MMDDrift
from hardenml.monitor.outputs import ConfidenceShift, PredictionShift
from hardenml.monitor.readings import Detector, DetectorReading, MonitorError, Window

__all__ = [
    "AdversarialScore",
    "ConfidenceShift",
    "Detector",
    "DetectorReading",
    "FeatureDrift",
    "MMDDrift",
    "MonitorError",
    "PredictionShift",
    "QueryCampaign",
    "Window",
    "holm_adjust",
    "target_predict",
]
