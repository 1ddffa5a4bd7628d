"""The adversarial-examples part of the HTML page's view: what the open findings kept as
evidence, as pictures or feature changes, how many inputs the attack really flipped, and
(with `[explain]`) the Integrated Gradients maps of each original and adversarial input
or, for tabular inputs, the features that carried the flip.

Only data and formatted text: the template `templates/report.html.j2` lays it out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from hardenml.config import HardenConfig
from hardenml.gate import GateDecision
from hardenml.imaging import delta_pixels, png_data_uri, to_pixels, upscale
from hardenml.ledger import FindingState
from hardenml.records import Measurement
from hardenml.report.common import measurements
from hardenml.report.evidence import (
    Attributions,
    AttributionsMissing,
    Evidence,
    EvidenceProblem,
    FeatureAblation,
    is_image_shape,
    load_attributions,
    load_evidence,
)
from hardenml.scan.explain import heatmap
from hardenml.targets.text_codec import decode_texts

EXAMPLES_SHOWN = 8
TOP_FEATURES = 5
CARRIED_FEATURES = 3
# A threat's robust accuracy counts the samples the model got right both before and under
# the attack (`AttackResult.robust_correct`), so only for this metric is
# "clean hits - robust hits" the number of inputs the attack flipped.
FLIP_METRIC = "robust_accuracy"


@dataclass(frozen=True)
class FlipCount:
    """Inputs the attack flipped in a run: right before the attack, wrong under it."""

    flipped: int
    correct_before: int
    n: int
    run_id: str


@dataclass(frozen=True)
class Picture:
    src: str  # a data: URI
    width: int
    height: int
    alt: str


@dataclass(frozen=True)
class ImageExample:
    index: int
    pictures: list[Picture]
    true_class: str
    predicted: str
    linf: str
    # Attribution maps: of the original for its class, of the adversarial input for the
    # class it is now taken for. Empty without attributions.
    maps: list[Picture] = field(default_factory=list)


@dataclass(frozen=True)
class FeatureShare:
    """A feature's share of the change in margin that flipped the decision."""

    feature: str
    share: str


@dataclass(frozen=True)
class AttributionSummary:
    """How the attributions were made and how far to trust them (completeness)."""

    method: str
    steps: int
    baseline: str
    explained: int
    completeness_gap: str
    ranked: list[FeatureShare]


@dataclass(frozen=True)
class AblationSummary:
    """The features that carried a gradient-free model's flips, and how additive they are."""

    method: str
    why: str
    explained: int
    additivity_gap: str
    ranked: list[FeatureShare]


@dataclass(frozen=True)
class FeatureChange:
    feature: str  # "[3]" or "[0,2,5]"
    before: str
    after: str
    delta: str


@dataclass(frozen=True)
class TabularExample:
    index: int
    true_class: str
    predicted: str
    linf: str
    changes: list[FeatureChange]
    # The features that carried this example's flip, largest share first (attributions).
    carried: list[FeatureShare] = field(default_factory=list)


@dataclass(frozen=True)
class TextExample:
    """A text model's example: the strings before and after, as data (the template escapes
    them; `repr`-style escapes make invisible and look-alike characters visible)."""

    index: int
    true_class: str
    predicted: str
    original: str
    changed: str


@dataclass(frozen=True)
class EvidenceView:
    """One evidence file of a finding, ready to print."""

    kind: ClassVar[str] = "evidence"
    finding_id: str
    heading: str
    path: str
    kept: int
    shown: int
    flips: FlipCount | None
    is_image: bool
    images: list[ImageExample]
    rows: list[TabularExample]
    top_features: int = TOP_FEATURES
    attribution: AttributionSummary | None = None
    # Why there are no attributions to show, when the scan tried (no gradients, a changed file).
    attribution_note: str | None = None
    # For a model without gradients: the features that carried the flips, by ablation.
    ablation: AblationSummary | None = None
    # A text model's examples (then `images` and `rows` are empty).
    texts: list[TextExample] = field(default_factory=list)


@dataclass(frozen=True)
class EvidenceProblemView:
    """An evidence file that is not shown, and why."""

    kind: ClassVar[str] = "problem"
    finding_id: str
    path: str
    reason: str


ExampleBlock = EvidenceView | EvidenceProblemView


def example_blocks(
    config: HardenConfig, decision: GateDecision, own: Sequence[FindingState]
) -> list[ExampleBlock]:
    """Every evidence file of the open findings, in the findings' order."""
    blocks: list[ExampleBlock] = []
    for finding in own:
        if not finding.is_open:
            continue
        flips = flip_count(decision, finding)
        for item in load_evidence(config, finding):
            if isinstance(item, EvidenceProblem):
                blocks.append(EvidenceProblemView(finding.finding_id, item.path, item.reason))
            else:
                blocks.append(_evidence_view(config, finding, item, flips))
    return blocks


def flip_count(decision: GateDecision, finding: FindingState) -> FlipCount | None:
    """How many inputs the finding's threat flipped in the decided run, from its clean and
    robust accuracy on the same n; None when the run did not measure both."""
    if finding.metric != FLIP_METRIC or finding.threat is None:
        return None
    ms = measurements(decision.run.payload)
    clean = next((m for m in ms if m.metric == "clean_accuracy" and m.threat is None), None)
    robust = next(
        (
            m
            for m in ms
            if m.metric == FLIP_METRIC and m.threat == finding.threat and m.budget == finding.budget
        ),
        None,
    )
    if clean is None or robust is None or clean.n != robust.n:
        return None
    correct_before, still_correct = _hits(clean), _hits(robust)
    if correct_before is None or still_correct is None or still_correct > correct_before:
        return None
    return FlipCount(correct_before - still_correct, correct_before, clean.n, decision.run.run_id)


def _hits(m: Measurement) -> int | None:
    """The count behind a proportion (value = hits / n); None when it is not one."""
    hits = m.value * m.n
    return round(hits) if np.isfinite(hits) and abs(hits - round(hits)) < 1e-6 else None


def _evidence_view(
    config: HardenConfig, finding: FindingState, ev: Evidence, flips: FlipCount | None
) -> EvidenceView:
    kept = len(ev.y)
    shown = min(kept, EXAMPLES_SHOWN)
    is_image = is_image_shape(tuple(ev.x.shape[1:]))
    budget = "-" if finding.budget is None else f"{finding.budget:g}"
    found = load_attributions(config, finding)
    attributions = found if isinstance(found, Attributions) else None
    ablation = (
        _ablation(found, tuple(ev.x.shape[1:])) if isinstance(found, FeatureAblation) else None
    )
    if isinstance(found, AttributionsMissing):
        note: str | None = f"Attributions not computed: {found.reason}."
    elif isinstance(found, EvidenceProblem):
        note = f"Attributions {found.path} not shown: {found.reason}."
    else:
        note = None
    text = config.model.input.modality == "text"
    is_image = is_image and not text
    images = _image_examples(config, ev, shown) if is_image else []
    rows = [] if is_image or text else _tabular_examples(config, ev, shown)
    texts = _text_examples(config, ev, shown) if text else []
    if attributions is not None:
        images = [_with_maps(example, attributions) for example in images]
        rows = [_with_carried(row, attributions, tuple(ev.x.shape[1:])) for row in rows]
    return EvidenceView(
        finding_id=finding.finding_id,
        heading=f"{finding.finding_id}: {finding.threat or finding.metric} at budget {budget}",
        path=ev.path,
        kept=kept,
        shown=shown,
        flips=flips,
        is_image=is_image,
        images=images,
        rows=rows,
        attribution=None if attributions is None else _summary(attributions, tuple(ev.x.shape[1:])),
        attribution_note=note,
        ablation=ablation,
        texts=texts,
    )


def _ablation(found: FeatureAblation, shape: tuple[int, ...]) -> AblationSummary:
    record = found.record
    return AblationSummary(
        method=str(record.get("method")),
        why=str(record.get("why")),
        explained=int(record.get("count") or 0),
        additivity_gap=f"{float(record.get('additivity_gap') or 0.0):.2%}",
        ranked=[
            FeatureShare(_index(int(r["feature"]), shape), f"{float(r['share']):+.1%}")
            for r in record.get("ranked_features") or []
        ],
    )


def _text_examples(config: HardenConfig, ev: Evidence, shown: int) -> list[TextExample]:
    before, after = decode_texts(ev.x[:shown]), decode_texts(ev.x_adv[:shown])
    return [
        TextExample(
            i,
            _class_name(config, ev.y[i]),
            _class_name(config, ev.pred[i]),
            visible_text(before[i]),
            visible_text(after[i]),
        )
        for i in range(shown)
    ]


def visible_text(text: str) -> str:
    """`text` with characters that do not show (zero-width, controls) and those outside
    ASCII written as escapes, so that a homoglyph or an invisible edit can be seen."""
    return "".join(ch if ch.isascii() and ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def _summary(att: Attributions, shape: tuple[int, ...]) -> AttributionSummary:
    record = att.record
    ranked = [
        FeatureShare(_index(int(r["feature"]), shape), f"{float(r['share']):+.1%}")
        for r in record.get("ranked_features") or []
    ]
    return AttributionSummary(
        method=str(record.get("method")),
        steps=int(record.get("steps") or 0),
        baseline=str(record.get("baseline")),
        explained=len(att.arrays["y"]),
        completeness_gap=f"{float(record.get('completeness_gap') or 0.0):.2%}",
        ranked=ranked,
    )


def _with_maps(example: ImageExample, att: Attributions) -> ImageExample:
    """The example with its two attribution maps, when it was among those explained."""
    i = example.index
    if i >= len(att.arrays["y"]):
        return example
    maps = []
    for name, alt in (
        ("before", f"attribution of the original, class {example.true_class}"),
        ("after", f"attribution of the adversarial input, class {example.predicted}"),
    ):
        big = upscale(heatmap(att.arrays[name][i]))
        maps.append(Picture(png_data_uri(big), big.shape[1], big.shape[0], alt))
    return replace(example, maps=maps)


def _with_carried(row: TabularExample, att: Attributions, shape: tuple[int, ...]) -> TabularExample:
    """The row with the features whose attribution carried most of its margin change."""
    i = row.index
    if i >= len(att.arrays["y"]):
        return row
    flip = att.arrays["flip"][i].ravel()
    change = float(att.arrays["change_flip"][i])
    scale = change if abs(change) > 1e-9 else float(np.abs(flip).sum()) or 1.0
    order = np.argsort(-np.abs(flip), kind="stable")[:CARRIED_FEATURES]
    carried = [FeatureShare(_index(int(j), shape), f"{flip[j] / scale:+.1%}") for j in order]
    return replace(row, carried=carried)


def _class_name(config: HardenConfig, label: Any) -> str:
    i = int(label)
    classes = config.model.classes
    return classes[i] if 0 <= i < len(classes) else str(i)


def _image_examples(config: HardenConfig, ev: Evidence, shown: int) -> list[ImageExample]:
    bounds = config.model.input.bounds
    out = []
    for i in range(shown):
        x, x_adv = ev.x[i].astype(np.float64), ev.x_adv[i].astype(np.float64)
        true, pred = _class_name(config, ev.y[i]), _class_name(config, ev.pred[i])
        images = [
            (to_pixels(x, bounds), f"original, class {true}"),
            (to_pixels(x_adv, bounds), f"adversarial, predicted {pred}"),
            (delta_pixels(x_adv - x), "change (grey: none, white: up, black: down)"),
        ]
        pictures = []
        for pixels, alt in images:
            big = upscale(pixels)
            pictures.append(Picture(png_data_uri(big), big.shape[1], big.shape[0], alt))
        linf = float(np.abs(x_adv - x).max()) if x.size else 0.0
        out.append(ImageExample(i, pictures, true, pred, f"{linf:.3f}"))
    return out


def _tabular_examples(config: HardenConfig, ev: Evidence, shown: int) -> list[TabularExample]:
    out = []
    feature_shape = tuple(ev.x.shape[1:])
    for i in range(shown):
        x, x_adv = ev.x[i].ravel(), ev.x_adv[i].ravel()
        delta = x_adv - x
        order = np.argsort(-np.abs(delta), kind="stable")[:TOP_FEATURES]
        changes = [
            FeatureChange(
                _index(int(j), feature_shape), f"{x[j]:.4g}", f"{x_adv[j]:.4g}", f"{delta[j]:+.4g}"
            )
            for j in order
            if delta[j] != 0
        ]
        linf = float(np.abs(delta).max()) if delta.size else 0.0
        out.append(
            TabularExample(
                i,
                _class_name(config, ev.y[i]),
                _class_name(config, ev.pred[i]),
                f"{linf:.4g}",
                changes,
            )
        )
    return out


def _index(flat: int, shape: tuple[int, ...]) -> str:
    if len(shape) <= 1:
        return f"[{flat}]"
    return "[" + ",".join(str(int(k)) for k in np.unravel_index(flat, shape)) + "]"
