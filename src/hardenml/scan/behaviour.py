"""Behavioural test suites: what the model must and must not do, checked sample by sample.

Ribeiro et al. 2020, "Beyond Accuracy: Behavioral Testing of NLP Models with CheckList",
https://arxiv.org/abs/2005.04118. Its three test types, for image and tabular classifiers:

- invariance (INV): a label-preserving transform must not change the predicted class.
  The transform is one of hardenml's common corruptions at a severity 1..5 (Hendrycks &
  Dietterich 2019; `hardenml.threats.corruptions`), applied to every sample, right or
  wrong, or `feature-noise`: uniform noise in [-noise, +noise] (raw input units) on the
  named features. Failure: the predicted class changed.
- directional (DIR): adding `change` to one feature (clipped to the input bounds) must
  move the probability of one class as expected. "increase"/"decrease" are strict and are
  judged on the class's log-odds (the same direction as its probability, but a
  probability saturated at 1.0 in floating point still shows its movement);
  "not_decrease"/"not_increase" allow the probability to move the other way by at most
  `tolerance`. Samples whose feature already sits at the bound (the clipped change is
  zero) test nothing and are left out of n. Failure: moved the wrong way.
- minimum functionality (MFT): accuracy on the samples of one class (or on all) must
  reach `min_accuracy`. Failure: a misclassified sample.

Every suite reports n, failures, the failure rate with its Wilson interval at the policy's
confidence, and passed/failed. Seeded: each suite draws from its own generator,
`derive_seed(seed, "behaviour", name)`, so the same seed gives the same numbers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hardenml.config import (
    FEATURE_NOISE,
    TEXT_TRANSFORMS,
    BehaviourSuite,
    ConfigError,
    ConfigProblem,
    HardenConfig,
)
from hardenml.records import Measurement
from hardenml.scan.metrics import proportion
from hardenml.scan.text_behaviour import negated, template_inputs, text_transform
from hardenml.stats import derive_seed, wilson_interval
from hardenml.targets import Target
from hardenml.threats import available_threats, threat_class

BATCH = 512
# Failing samples kept per suite as evidence.
EXAMPLES = 32


class BehaviourError(ValueError):
    """A suite the data cannot run; `key` is the suite's config key it comes from."""

    def __init__(self, key: str, value: Any, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.value = value


@dataclass(frozen=True)
class SuiteResult:
    """One suite's outcome. A sample *passes* when its prediction stays (invariance),
    moves as expected (directional) or is right (minimum); the suite passes when the
    share of passing samples reaches `threshold` (`1 - max_failure_rate`, or
    `min_accuracy`)."""

    name: str
    kind: str
    n: int
    failures: int
    threshold: float
    confidence: float
    # The run's seed; the suite's own draws come from derive_seed(seed, "behaviour", name).
    seed: int
    # What was tested: transform and severity, feature and change, class.
    detail: dict[str, Any] = field(default_factory=dict)
    # Up to EXAMPLES failing samples: "x", "x_changed", "y", "pred" (prediction on x_changed).
    examples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    # Wall-clock seconds the suite took (JUnit's `time`).
    seconds: float = 0.0

    @property
    def check_name(self) -> str:
        return f"behaviour[{self.name}]"

    @property
    def failure_rate(self) -> float:
        return self.failures / self.n

    @property
    def pass_rate(self) -> float:
        """Share of samples that pass; for a minimum suite, its accuracy."""
        return (self.n - self.failures) / self.n

    @property
    def failure_ci(self) -> tuple[float, float]:
        return wilson_interval(self.failures, self.n, self.confidence)

    @property
    def passed(self) -> bool:
        # The same comparison the policy check makes on the measurement.
        return self.measurement().value >= self.threshold

    def measurement(self) -> Measurement:
        """The pass rate as a measurement keyed `behaviour[NAME]` (Wilson interval)."""
        return proportion(
            self.check_name,
            self.n - self.failures,
            self.n,
            confidence=self.confidence,
            seed=self.seed,
        )

    def as_dict(self) -> dict[str, Any]:
        lo, hi = self.failure_ci
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "n": self.n,
            "failures": self.failures,
            "failure_rate": self.failure_rate,
            "failure_rate_ci": [lo, hi],
            "confidence": self.confidence,
            "passed": self.passed,
            "seed": self.seed,
            **self.detail,
        }
        if self.kind == "minimum":
            out["accuracy"] = self.pass_rate
            out["accuracy_ci"] = [1.0 - hi, 1.0 - lo]
            out["min_accuracy"] = self.threshold
        else:
            out["max_failure_rate"] = round(1.0 - self.threshold, 12)
        return out


def run_suites(
    config: HardenConfig,
    target: Target,
    x: np.ndarray,
    y: np.ndarray,
    *,
    feature_names: Sequence[str] | None,
    seed: int,
) -> list[SuiteResult]:
    """Every `[[behaviour]]` suite of `config` on the samples `x` (n, *input_shape) with
    labels `y` (n,). Raises `ConfigError` naming the suite's key when the data cannot run
    it (an unknown feature name, a class with no samples)."""
    if not config.behaviour:
        return []
    preflight(config, tuple(x.shape[1:]), feature_names)
    results = []
    for i, suite in enumerate(config.behaviour):
        started = time.perf_counter()
        try:
            result = run_suite(
                suite,
                target,
                torch.from_numpy(x),
                torch.from_numpy(y),
                classes=list(config.model.classes),
                feature_names=feature_names,
                confidence=config.policy.confidence,
                seed=seed,
            )
        except BehaviourError as exc:
            raise _config_error(config, i, exc) from None
        results.append(replace(result, seconds=time.perf_counter() - started))
    return results


def preflight(
    config: HardenConfig, input_shape: tuple[int, ...], feature_names: Sequence[str] | None
) -> None:
    """Check, before any work, that every suite fits the model's inputs: its features
    exist and its corruption can transform inputs of this shape."""
    problems = []
    for i, suite in enumerate(config.behaviour):
        try:
            _resolve(suite, input_shape, feature_names, text=config.model.input.modality == "text")
        except BehaviourError as exc:
            problems.append(_problem(config, i, exc))
    if problems:
        raise ConfigError(config.source, problems)


def _problem(config: HardenConfig, i: int, exc: BehaviourError) -> ConfigProblem:
    key = f"behaviour[{i}].{exc.key}"
    line = config.key_lines.get(key) or config.key_lines.get(f"behaviour[{i}]")
    return ConfigProblem(key, exc.value, str(exc), line)


def _config_error(config: HardenConfig, i: int, exc: BehaviourError) -> ConfigError:
    return ConfigError(config.source, [_problem(config, i, exc)])


def _resolve(
    suite: BehaviourSuite,
    input_shape: tuple[int, ...],
    feature_names: Sequence[str] | None,
    *,
    text: bool = False,
) -> list[int]:
    """The flat feature columns a suite touches; raises `BehaviourError` if it cannot run.
    `text`: the model reads strings, which only the text suites change."""
    textual = suite.transform in TEXT_TRANSFORMS or suite.edit is not None
    if suite.kind == "minimum":
        if suite.templates is not None and not text:
            raise BehaviourError(
                "templates", suite.templates, "no templates: this model reads tensors"
            )
        return []
    if text != textual:
        key: str = "edit" if suite.edit is not None else "transform"
        value: Any = suite.edit if suite.edit is not None else suite.transform
        if suite.kind == "directional" and suite.edit is None:
            key, value = "feature", suite.feature
        wanted = (
            f"a text change ({', '.join(TEXT_TRANSFORMS)}, or edit = 'negation'): the model "
            "reads strings"
            if text
            else "a change of tensors: text transforms and edits need a text model"
        )
        raise BehaviourError(key, value, wanted)
    if textual:
        return []
    n_features = int(np.prod(input_shape))
    if suite.kind == "directional":
        assert suite.feature is not None
        return [feature_index(suite.feature, feature_names, n_features, key="feature")]
    if suite.kind == "invariance" and suite.transform == FEATURE_NOISE:
        assert suite.features is not None
        return [feature_index(f, feature_names, n_features, key="features") for f in suite.features]
    if suite.kind == "invariance":
        assert suite.transform is not None
        corruptions = [n for n in available_threats() if threat_class(n).family == "corruption"]
        if suite.transform not in corruptions:
            raise BehaviourError(
                "transform",
                suite.transform,
                f"a registered corruption ({', '.join(corruptions)}) or 'feature-noise'",
            )
        spatial = bool(getattr(threat_class(suite.transform), "spatial", True))
        if spatial and len(input_shape) not in (2, 3):
            raise BehaviourError(
                "transform",
                suite.transform,
                f"a transform the inputs allow: {suite.transform!r} needs images of shape "
                f"(c, h, w) or (h, w), the model takes {list(input_shape)}; for tabular data "
                "use 'feature-noise' or a pixel-wise corruption (gaussian-noise, brightness, "
                "contrast)",
            )
    return []


def feature_index(
    feature: int | str, names: Sequence[str] | None, n_features: int, *, key: str
) -> int:
    """The flat column of `feature`, given by name (from the data's feature names) or index."""
    if isinstance(feature, str):
        known = list(names or [])
        if feature not in known:
            shown = f"{known[:20]}{' ...' if len(known) > 20 else ''}" if known else "none"
            raise BehaviourError(
                key,
                feature,
                f"a feature name of the data (its names: {shown}) or a column index "
                f"0..{n_features - 1}",
            )
        return known.index(feature)
    if not -n_features <= feature < n_features:
        raise BehaviourError(key, feature, f"a column index within the {n_features} input features")
    return feature % n_features


@dataclass(frozen=True)
class _Outcome:
    """Per-sample outcome of one suite: the changed inputs, the predictions on them, and
    which samples were tested and which of those failed."""

    x_changed: Tensor
    pred: Tensor
    tested: Tensor
    failed: Tensor
    detail: dict[str, Any]


def run_suite(
    suite: BehaviourSuite,
    target: Target,
    x: Tensor,
    y: Tensor,
    *,
    classes: Sequence[str],
    feature_names: Sequence[str] | None,
    confidence: float,
    seed: int,
) -> SuiteResult:
    """One suite on `x` (n, *input_shape) with labels `y` (n,). Its random draws come
    from `derive_seed(seed, "behaviour", suite.name)`."""
    text = target.input_spec.modality == "text"
    columns = _resolve(suite, tuple(x.shape[1:]), feature_names, text=text)
    generator = torch.Generator().manual_seed(derive_seed(seed, "behaviour", suite.name))
    if suite.kind == "minimum" and suite.templates is not None:
        assert suite.class_ is not None
        try:
            x, y = template_inputs(
                suite, target.input_spec.shape[0], list(classes).index(suite.class_)
            )
        except ValueError as exc:
            raise BehaviourError("templates", suite.templates, str(exc)) from None
    if text and suite.kind != "minimum":
        out = _text_change(suite, target, x, y, classes, generator)
    elif suite.kind == "invariance":
        out = _invariance(suite, target, x, y, columns, generator)
    elif suite.kind == "directional":
        out = _directional(suite, target, x, columns[0], classes)
    else:
        out = _minimum(suite, target, x, y, classes)
    bad = out.failed & out.tested
    failing = bad.nonzero().flatten()[:EXAMPLES]
    return SuiteResult(
        name=suite.name,
        kind=suite.kind,
        n=int(out.tested.sum()),
        failures=int(bad.sum()),
        threshold=suite.threshold,
        confidence=confidence,
        seed=seed,
        detail=out.detail,
        examples={
            "x": x[failing].numpy(),
            "x_changed": out.x_changed[failing].numpy(),
            "y": y[failing].numpy(),
            "pred": out.pred[failing].numpy(),
        },
    )


def _invariance(
    suite: BehaviourSuite,
    target: Target,
    x: Tensor,
    y: Tensor,
    columns: list[int],
    generator: torch.Generator,
) -> _Outcome:
    """Every sample is tested; it fails when the transform changes its predicted class."""
    x_changed = _transform(suite, target, x, y, columns, generator)
    before, after = _logits(target, x).argmax(1), _logits(target, x_changed).argmax(1)
    detail: dict[str, Any] = {"transform": suite.transform}
    if suite.transform == FEATURE_NOISE:
        detail |= {"features": list(suite.features or []), "noise": suite.noise}
    else:
        detail["severity"] = suite.severity
    tested = torch.ones(len(x), dtype=torch.bool)
    return _Outcome(x_changed, after, tested, before != after, detail)


def _directional(
    suite: BehaviourSuite, target: Target, x: Tensor, column: int, classes: Sequence[str]
) -> _Outcome:
    """Samples whose feature the change moves are tested; one fails when P(class) moves
    against the expectation."""
    assert suite.class_ is not None and suite.change is not None
    x_changed, tested = _shift_feature(target, x, column, suite.change)
    if not bool(tested.any()):
        raise BehaviourError(
            "change",
            suite.change,
            f"a change that moves the feature: {suite.feature!r} is at the input bound for "
            "every sample",
        )
    z0, z1 = _logits(target, x), _logits(target, x_changed)
    failed = ~_moved_as_expected(z0, z1, list(classes).index(suite.class_), suite)
    detail: dict[str, Any] = {
        "feature": suite.feature,
        "change": suite.change,
        "class": suite.class_,
        "expect": suite.expect,
    }
    if suite.expect in ("not_decrease", "not_increase"):
        detail["tolerance"] = suite.tolerance
    return _Outcome(x_changed, z1.argmax(1), tested, failed, detail)


def _minimum(
    suite: BehaviourSuite, target: Target, x: Tensor, y: Tensor, classes: Sequence[str]
) -> _Outcome:
    """Samples of the class (or all) are tested; one fails when it is misclassified."""
    if suite.class_ is None:
        tested = torch.ones(len(y), dtype=torch.bool)
    else:
        tested = y == list(classes).index(suite.class_)
    if not bool(tested.any()):
        raise BehaviourError(
            "class",
            suite.class_,
            f"a class the evaluated samples contain: none of the {len(y)} is "
            f"{suite.class_!r} (raise data.max_samples or pick another class)",
        )
    pred = _logits(target, x).argmax(1)
    return _Outcome(x, pred, tested, pred != y, {"class": suite.class_})


def _text_change(
    suite: BehaviourSuite,
    target: Target,
    x: Tensor,
    y: Tensor,
    classes: Sequence[str],
    generator: torch.Generator,
) -> _Outcome:
    """An invariance or directional suite on a text model: the change comes from
    `hardenml.scan.text_behaviour`; inputs it leaves alone are not tested."""
    if suite.kind == "invariance":
        x_changed, tested = text_transform(suite, x, generator)
        before, after = _logits(target, x).argmax(1), _logits(target, x_changed).argmax(1)
        detail: dict[str, Any] = {"transform": suite.transform}
        if suite.transform == "typos":
            detail["severity"] = suite.severity
        failed = before != after
    else:
        assert suite.class_ is not None
        c = list(classes).index(suite.class_)
        x_changed, tested = negated(x)
        tested &= y == c
        z0, z1 = _logits(target, x), _logits(target, x_changed)
        after = z1.argmax(1)
        failed = ~_moved_as_expected(z0, z1, c, suite)
        detail = {"edit": suite.edit, "class": suite.class_, "expect": suite.expect}
    if not bool(tested.any()):
        key = "transform" if suite.kind == "invariance" else "edit"
        raise BehaviourError(
            key,
            getattr(suite, key),
            f"a change that applies to some of the {len(x)} evaluated texts: it changed none "
            "(raise data.max_samples or pick another)",
        )
    return _Outcome(x_changed, after, tested, failed, detail)


@torch.no_grad()
def _logits(target: Target, x: Tensor) -> Tensor:
    """Model outputs in float64 on the CPU, computed in batches."""
    parts = [
        target.logits(x[i : i + BATCH].to(target.device, target.input_spec.dtype)).double().cpu()
        for i in range(0, len(x), BATCH)
    ]
    return torch.cat(parts) if parts else torch.zeros(0, len(target.classes), dtype=torch.float64)


def _transform(
    suite: BehaviourSuite,
    target: Target,
    x: Tensor,
    y: Tensor,
    columns: list[int],
    generator: torch.Generator,
) -> Tensor:
    """`x` under the suite's transform, within the input bounds; every sample, right or
    wrong, is transformed (the threat's entry point would skip misclassified ones)."""
    lo, hi = target.input_spec.bounds
    if suite.transform == FEATURE_NOISE:
        assert suite.noise is not None
        flat = x.reshape(len(x), -1).clone()
        cols = torch.tensor(columns, dtype=torch.long)
        u = torch.rand((len(x), len(columns)), generator=generator, dtype=torch.float64)
        flat[:, cols] += ((2 * u - 1) * suite.noise).to(flat.dtype)
        return flat.clamp(lo, hi).reshape(x.shape)
    assert suite.transform is not None
    corruption = threat_class(suite.transform)()
    parts = [
        corruption.run(target, x[i : i + BATCH], y[i : i + BATCH], suite.severity, generator)
        for i in range(0, len(x), BATCH)
    ]
    return torch.cat(parts).clamp(lo, hi) if parts else x.clone()


def _shift_feature(target: Target, x: Tensor, column: int, change: float) -> tuple[Tensor, Tensor]:
    """`x` with `change` added to one flat column, clipped to the input bounds, and the
    mask of samples whose column actually moved."""
    lo, hi = target.input_spec.bounds
    flat = x.reshape(len(x), -1).clone()
    flat[:, column] = (flat[:, column] + change).clamp(lo, hi)
    moved = flat[:, column] != x.reshape(len(x), -1)[:, column]
    return flat.reshape(x.shape), moved


def log_odds(logits: Tensor, c: int) -> Tensor:
    """log(p_c / (1 - p_c)) from logits (n, k): z_c - logsumexp of the other classes."""
    others = torch.cat([logits[:, :c], logits[:, c + 1 :]], dim=1)
    return logits[:, c] - torch.logsumexp(others, dim=1)


def _moved_as_expected(z0: Tensor, z1: Tensor, c: int, suite: BehaviourSuite) -> Tensor:
    if suite.expect == "increase":
        return log_odds(z1, c) > log_odds(z0, c)
    if suite.expect == "decrease":
        return log_odds(z1, c) < log_odds(z0, c)
    delta = z1.softmax(1)[:, c] - z0.softmax(1)[:, c]
    if suite.expect == "not_decrease":
        return delta >= -suite.tolerance
    return delta <= suite.tolerance
