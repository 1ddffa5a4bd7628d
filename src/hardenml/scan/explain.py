"""Integrated Gradients for the adversarial examples a finding keeps: what the model
attended to before and after the attack, and which input features carried the flip.

Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep Networks",
https://arxiv.org/abs/1703.01365, computed by captum's `IntegratedGradients`
(https://captum.ai; the `hardenml[explain]` extra) on the model's logits. Three
attributions per example, each of shape `(n, *input_shape)`:

- `before`: the original `x` for its true class, from a baseline of the input's lower bound
  everywhere (a black image; every feature at its minimum);
- `after`: the adversarial `x_adv` for the class the model now predicts, same baseline;
- `flip`: along the straight path from `x` to `x_adv`, the margin logit[adversarial class] -
  logit[true class]. IG is linear in the output, so this is IG(logit_adv) - IG(logit_true)
  on that path: each feature's share of the change that flipped the decision.

Completeness (the paper's axiom) says each attribution sums to F(input) - F(baseline);
the Riemann sum misses by a gap that shrinks with `explain.steps`, and the reports show
the largest relative gap so a reader knows how far to trust the maps.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hardenml.config import ConfigError, ConfigProblem, HardenConfig
from hardenml.imaging import png_bytes, to_pixels, upscale
from hardenml.targets import Target
from hardenml.threats.batching import chunk_rows

EXPLAIN_EXTRA = "pip install 'hardenml[explain]'"
METHOD = "Integrated Gradients (Sundararajan et al. 2017), captum"
BASELINE = "the input's lower bound everywhere"
ATTRIBUTION_ARRAYS = (
    "before", "after", "flip", "change_before", "change_after", "change_flip",
    "gap_before", "gap_after", "gap_flip", "y", "pred",
)  # fmt: skip
# An output change smaller than this says nothing about completeness.
_TINY = 1e-6


def require_explainer(config: HardenConfig) -> None:
    """Refuse, before any work, a config that asks for explanations without captum."""
    if config.explain.enabled and importlib.util.find_spec("captum") is None:
        raise ConfigError(
            config.source,
            [
                ConfigProblem(
                    "explain.enabled",
                    True,
                    f"the captum package for attributions ({EXPLAIN_EXTRA}), or "
                    "explain.enabled = false",
                    config.key_lines.get("explain.enabled"),
                )
            ],
        )


@dataclass(frozen=True)
class Attribution:
    """IG attributions `values` (n, *input_shape), the output change each should sum to,
    F(input) - F(baseline) (n,), and the completeness gap sum(values) - change (n,)."""

    values: np.ndarray
    change: np.ndarray
    gap: np.ndarray

    def relative_gap(self) -> float:
        """The largest |gap| / |change| over examples whose output changed at all."""
        moved = np.abs(self.change) > _TINY
        if not moved.any():
            return 0.0
        return float((np.abs(self.gap[moved]) / np.abs(self.change[moved])).max())


def integrated_gradients(
    target: Target, x: Tensor, classes: Tensor, baseline: Tensor, *, steps: int
) -> Attribution:
    """IG of logit[classes[i]] at `x[i]` from `baseline[i]` (both `(n, *input_shape)`)."""
    from captum.attr import IntegratedGradients

    target.require_gradients()
    device, dtype = target.device, target.input_spec.dtype
    x, baseline = x.to(device, dtype), baseline.to(device, dtype)
    classes = classes.to(device)
    explainer = IntegratedGradients(target.logits)
    values, gap = explainer.attribute(
        x,
        baselines=baseline,
        target=classes,
        n_steps=steps,
        return_convergence_delta=True,
        # Rows in flight at once (n * steps in all): the same memory rule as the attacks.
        internal_batch_size=max(1, chunk_rows(target, 4)),
    )
    with torch.no_grad():
        at = target.logits(x).gather(1, classes[:, None]).squeeze(1)
        base = target.logits(baseline).gather(1, classes[:, None]).squeeze(1)
    return Attribution(
        values.detach().cpu().numpy(),
        (at - base).cpu().numpy(),
        gap.detach().cpu().numpy(),
    )


@dataclass(frozen=True)
class Explanation:
    """The three attributions of a set of flipped examples (see the module docstring)."""

    before: Attribution
    after: Attribution
    flip: Attribution
    y: np.ndarray
    pred: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {"y": self.y, "pred": self.pred}
        for name in ("before", "after", "flip"):
            part: Attribution = getattr(self, name)
            out |= {name: part.values, f"change_{name}": part.change, f"gap_{name}": part.gap}
        return out

    def relative_gap(self) -> float:
        return max(a.relative_gap() for a in (self.before, self.after, self.flip))


def explain_flips(
    target: Target,
    x: np.ndarray,
    x_adv: np.ndarray,
    y: np.ndarray,
    pred: np.ndarray,
    *,
    steps: int,
) -> Explanation:
    """Attributions before, after and of the flip for originals `x` and adversarial
    inputs `x_adv` (n, *input_shape), true labels `y` and adversarial predictions `pred`."""
    lo, _ = target.input_spec.bounds
    xs, advs = torch.from_numpy(np.asarray(x)), torch.from_numpy(np.asarray(x_adv))
    ys = torch.from_numpy(np.asarray(y)).long()
    preds = torch.from_numpy(np.asarray(pred)).long()
    floor = torch.full_like(xs, lo)
    toward_adv = integrated_gradients(target, advs, preds, xs, steps=steps)
    toward_true = integrated_gradients(target, advs, ys, xs, steps=steps)
    flip = Attribution(
        toward_adv.values - toward_true.values,
        toward_adv.change - toward_true.change,
        toward_adv.gap - toward_true.gap,
    )
    return Explanation(
        before=integrated_gradients(target, xs, ys, floor, steps=steps),
        after=integrated_gradients(target, advs, preds, floor, steps=steps),
        flip=flip,
        y=np.asarray(y),
        pred=np.asarray(pred),
    )


def ranked_features(flip: np.ndarray, top: int = 5) -> list[dict[str, Any]]:
    """Features (flat indices) ranked by the share of the flip they carried, summed over
    the examples: each feature's attribution over the total margin change. A negative share
    worked against the flip."""
    flat = flip.reshape(len(flip), -1)
    total = float(flat.sum())
    scale = total if abs(total) > _TINY else float(np.abs(flat).sum()) or 1.0
    per_feature = flat.sum(axis=0) / scale
    order = np.argsort(-np.abs(per_feature), kind="stable")[:top]
    return [{"feature": int(j), "share": round(float(per_feature[j]), 4)} for j in order]


ABLATION_METHOD = (
    "single-feature ablation: each feature of the adversarial input reverted to its original "
    "value, one at a time (occlusion, Zeiler & Fergus 2014), on the model's outputs"
)
# Inputs wider than this are not ablated feature by feature (d model calls per example).
ABLATION_MAX_FEATURES = 4096


@dataclass(frozen=True)
class Ablation:
    """What each feature's change carried of the flip, without gradients: `effect[i, j]` is
    how much the margin (output for the adversarial class minus output for the true class)
    of adversarial example i falls when feature j alone is reverted; `change[i]` the
    margin's whole change from the original to the adversarial input."""

    effect: np.ndarray  # (n, d)
    change: np.ndarray  # (n,)

    def ranked(self, top: int = 5) -> list[dict[str, Any]]:
        return ranked_features(self.effect, top=top)

    def additivity_gap(self) -> float:
        """How far the single-feature effects fall short of (or exceed) the whole change,
        relative to it: zero when the features' changes act independently."""
        total = float(self.change.sum())
        if abs(total) <= _TINY:
            return 0.0
        return abs(float(self.effect.sum()) - total) / abs(total)


def feature_ablation(
    target: Target, x: np.ndarray, x_adv: np.ndarray, y: np.ndarray, pred: np.ndarray
) -> Ablation:
    """Single-feature ablation of each flip (see `Ablation`): d + 2 model calls per example,
    batched, for models without input gradients."""
    n = len(x)
    flat, flat_adv = x.reshape(n, -1), x_adv.reshape(n, -1)
    d = flat.shape[1]
    rows = np.arange(n)

    step = chunk_rows(target, 1)

    def margins(inputs: np.ndarray, index: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(inputs.reshape(len(inputs), *x.shape[1:]))
        with torch.no_grad():
            parts = [target.logits(batch[i : i + step]) for i in range(0, len(batch), step)]
        out = torch.cat(parts).double().cpu().numpy()
        return out[np.arange(len(out)), pred[index]] - out[np.arange(len(out)), y[index]]

    adv_margin = margins(flat_adv, rows)
    change = adv_margin - margins(flat, rows)
    reverted = np.repeat(flat_adv, d, axis=0)
    features = np.tile(np.arange(d), n)
    reverted[np.arange(n * d), features] = np.repeat(flat, d, axis=0)[np.arange(n * d), features]
    effect = adv_margin[:, None] - margins(reverted, np.repeat(rows, d)).reshape(n, d)
    return Ablation(effect=effect, change=change)


def heatmap(values: np.ndarray) -> np.ndarray:
    """Signed attributions (summed over channels) as uint8 grey: grey where a pixel does not
    matter, white where it speaks most for the class, black where most against.

    Signed, not |attribution|: from a constant baseline IG is (x - baseline) times an average
    gradient, so its magnitude largely traces the input itself, and the magnitude maps of a
    model with randomised weights look much like the trained model's (the input-dominance
    Adebayo et al. 2018 report); the signs do not (tests/test_explain.py)."""
    signed = values.sum(axis=0) if values.ndim == 3 else values
    top = float(np.abs(signed).max()) if signed.size else 0.0
    scaled = signed / top if top > 0 else signed
    return np.rint(127.5 + 127.5 * scaled).astype(np.uint8)


def explain_evidence(
    config: HardenConfig,
    target: Target,
    folder: Path,
    stem: str,
    arrays: dict[str, np.ndarray],
    shown: Callable[[Path], str],
) -> list[dict[str, Any]]:
    """Evidence entries for the first `explain.examples` flipped examples of one threat at
    one budget: the attributions as an .npz (sha256), and for image inputs one PNG per
    example (original | its attribution | adversarial | its attribution). `shown` turns a
    written file into the path the ledger records. A model without input gradients gets the
    features that carried each flip by single-feature ablation instead (`feature_ablation`),
    or, for inputs too wide to ablate, an entry saying why there is nothing."""
    take = min(config.explain.examples, len(arrays["y"]))
    if not target.has_gradients:
        width = int(np.prod(arrays["x"].shape[1:]))
        if width > ABLATION_MAX_FEATURES:
            reason = (
                f"{target.no_gradients_reason}, and its {width} input features are too many to "
                f"ablate one by one (at most {ABLATION_MAX_FEATURES})"
            )
            return [{"kind": "attributions_unavailable", "reason": reason}]
        if take == 0:
            return []
        ablation = feature_ablation(
            target,
            arrays["x"][:take],
            arrays["x_adv"][:take],
            arrays["y"][:take].astype(np.int64),
            arrays["pred"][:take].astype(np.int64),
        )
        return [
            {
                "kind": "feature_ablation",
                "count": take,
                "method": ABLATION_METHOD,
                "why": target.no_gradients_reason,
                "additivity_gap": round(ablation.additivity_gap(), 6),
                "ranked_features": ablation.ranked(),
            }
        ]
    if take == 0:
        return []
    explanation = explain_flips(
        target,
        arrays["x"][:take],
        arrays["x_adv"][:take],
        arrays["y"][:take],
        arrays["pred"][:take],
        steps=config.explain.steps,
    )
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **explanation.arrays())  # type: ignore[arg-type]
    blob = buffer.getvalue()
    path = folder / f"{stem}.attributions.npz"
    path.write_bytes(blob)
    entry: dict[str, Any] = {
        "kind": "attributions",
        "path": shown(path),
        "count": take,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "method": METHOD,
        "steps": config.explain.steps,
        "baseline": BASELINE,
        "completeness_gap": round(explanation.relative_gap(), 6),
        "ranked_features": ranked_features(explanation.flip.values),
    }
    entries = [entry]
    shape = arrays["x"].shape[1:]
    if len(shape) == 2 or (len(shape) == 3 and shape[0] in (1, 3)):
        entries += _maps(folder, stem, arrays, explanation, target.input_spec.bounds, shown)
    return entries


def _maps(
    folder: Path,
    stem: str,
    arrays: dict[str, np.ndarray],
    explanation: Explanation,
    bounds: tuple[float, float],
    shown: Callable[[Path], str],
) -> list[dict[str, Any]]:
    out = []
    for i in range(len(explanation.y)):
        parts = [
            _grey(to_pixels(arrays["x"][i], bounds)),
            _grey(heatmap(explanation.before.values[i])),
            _grey(to_pixels(arrays["x_adv"][i], bounds)),
            _grey(heatmap(explanation.after.values[i])),
        ]
        gap = np.full((parts[0].shape[0], 2, 3), 255, dtype=np.uint8)
        row = [parts[0]]
        for part in parts[1:]:
            row += [gap, part]
        blob = png_bytes(upscale(np.concatenate(row, axis=1)))
        path = folder / f"{stem}-attribution-{i:02d}.png"
        path.write_bytes(blob)
        out.append(
            {
                "kind": "attribution_map",
                "path": shown(path),
                "label": int(explanation.y[i]),
                "adversarial_prediction": int(explanation.pred[i]),
                "sha256": hashlib.sha256(blob).hexdigest(),
            }
        )
    return out


def _grey(pixels: np.ndarray) -> np.ndarray:
    """Greyscale pixels as RGB, so colour inputs and grey maps share one strip."""
    return pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=2)
