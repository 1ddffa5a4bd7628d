"""Hand-drawn inline SVG charts for the HTML report: no plotting library, no scripts.

Every string that reaches the markup, labels and colours alike, goes through
`html.escape` with quotes, and everything else is a number this module formats, so the
HTML report may embed the result as markup (tests/test_html_view.py checks it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from itertools import pairwise

from hardenml.report.calibration import ReliabilityBin, bins_calibration_error

# Data stay this far inside the axes, so points and marks at the ends are not clipped.
PAD = 12
CANDIDATE_COLOUR = "#1f6feb"
BASELINE_COLOUR = "#d9822b"
REQUIRED_COLOUR = "#cf222e"
# A reliability panel gives every bin at least this many pixels, so the bin's sample count
# (at most four characters at 8px, see `short_count`) never runs into its neighbour's.
BIN_MIN_PX = 18
RELIABILITY_MIN_SPAN = 200
# Bars of bins whose accuracy is 0 keep this height, so a bin that holds samples the
# model got all wrong is not mistaken for an empty one.
MIN_BAR_PX = 1.5


@dataclass(frozen=True)
class Layout:
    """One chart's size in pixels: the picture, the margins around the axes, and where
    the title, the x tick labels, the x axis name and the y axis name sit."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    title_y: int
    tick_gap: int
    label_gap: int
    y_label_x: int

    @property
    def span(self) -> int:
        """Width of the data area inside the axes."""
        return self.width - self.left - self.right - 2 * PAD

    @property
    def axes_bottom(self) -> int:
        return self.height - self.bottom


FULL = Layout(
    560, 340, left=56, right=16, top=30, bottom=72, title_y=18, tick_gap=16, label_gap=34,
    y_label_x=16,
)  # fmt: skip


def compact(bin_count: int) -> Layout:
    """A small reliability panel, wide enough for `bin_count` bins with their counts in a
    row between the title and the axes."""
    span = max(RELIABILITY_MIN_SPAN, BIN_MIN_PX * bin_count)
    left, right = 40, 10
    return Layout(
        left + right + span + 2 * PAD, 218, left=left, right=right, top=34, bottom=34,
        title_y=14, tick_gap=13, label_gap=27, y_label_x=11,
    )  # fmt: skip


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    lo: float | None = None
    hi: float | None = None


@dataclass(frozen=True)
class Series:
    label: str
    points: Sequence[Point]
    colour: str = CANDIDATE_COLOUR
    dashed: bool = False


@dataclass(frozen=True)
class Mark:
    """A single requirement drawn as a short bar: `y` must be met at `x`."""

    x: float
    y: float
    label: str


def _num(v: float) -> str:
    return f"{v:.1f}"


def _label(v: float) -> str:
    return f"{v:.3g}"


def short_count(count: int) -> str:
    """A sample count in at most four characters: 412, 1.2k, 12k, 3M."""
    if count < 1000:
        return str(count)
    if count < 9950:
        return f"{count / 1000:.1f}k"
    if count < 999_500:
        return f"{round(count / 1000)}k"
    return f"{round(count / 1_000_000)}M"


def nice_ticks(hi: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least `hi` (1, 2 or 5 times a power of ten apart)."""
    if hi <= 0 or not math.isfinite(hi):
        return [0.0, 1.0]
    raw = hi / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return [i * step for i in range(math.ceil(hi / step - 1e-9) + 1)]


def _readable(xs: Sequence[float], layout: Layout) -> bool:
    """Whether the measured budgets themselves can label the x axis without overlapping."""
    if not 2 <= len(xs) <= 8 or xs[0] != 0 or xs[-1] <= 0:
        return False
    span = layout.width - layout.left - layout.right
    return all((b - a) / xs[-1] * span >= 30 for a, b in pairwise(xs))


class _Frame:
    """Maps data coordinates to the drawing area and draws axes, grid and labels."""

    def __init__(self, x_ticks: list[float], y_ticks: list[float], layout: Layout) -> None:
        self.x_ticks, self.y_ticks, self.layout = x_ticks, y_ticks, layout
        self.x_max = max(x_ticks[-1], 1e-12)
        self.y_max = max(y_ticks[-1], 1e-12)

    def px(self, x: float) -> float:
        return self.layout.left + PAD + self.layout.span * x / self.x_max

    def py(self, y: float) -> float:
        lay = self.layout
        height = lay.axes_bottom - lay.top - 2 * PAD
        return lay.axes_bottom - PAD - height * y / self.y_max

    def axes(self, title: str, x_label: str, y_label: str) -> list[str]:
        lay = self.layout
        bottom = lay.axes_bottom
        parts = [
            f'<text class="title" x="{lay.width / 2}" y="{lay.title_y}" text-anchor="middle">'
            f"{escape(title)}</text>"
        ]
        for y in self.y_ticks:
            parts.append(
                f'<line class="grid" x1="{lay.left}" x2="{lay.width - lay.right}" '
                f'y1="{_num(self.py(y))}" y2="{_num(self.py(y))}"/>'
                f'<text class="tick" x="{lay.left - 6}" y="{_num(self.py(y) + 4)}" '
                f'text-anchor="end">{escape(_label(y))}</text>'
            )
        for x in self.x_ticks:
            parts.append(
                f'<line class="grid" x1="{_num(self.px(x))}" x2="{_num(self.px(x))}" '
                f'y1="{lay.top}" y2="{bottom}"/>'
                f'<text class="tick" x="{_num(self.px(x))}" y="{bottom + lay.tick_gap}" '
                f'text-anchor="middle">{escape(_label(x))}</text>'
            )
        parts.append(
            f'<rect class="axes" x="{lay.left}" y="{lay.top}" '
            f'width="{lay.width - lay.left - lay.right}" height="{bottom - lay.top}"/>'
            f'<text class="axis-label" x="{(lay.left + lay.width - lay.right) / 2}" '
            f'y="{bottom + lay.label_gap}" text-anchor="middle">{escape(x_label)}</text>'
            f'<text class="axis-label" transform="rotate(-90)" x="{-(lay.top + bottom) / 2}" '
            f'y="{lay.y_label_x}" text-anchor="middle">{escape(y_label)}</text>'
        )
        return parts


def _open(plot_id: str, title: str, layout: Layout) -> str:
    pid = escape(plot_id)
    return (
        f'<svg class="plot" data-plot="{pid}" role="img" aria-labelledby="{pid}-title" '
        f'width="{layout.width}" height="{layout.height}" '
        f'viewBox="0 0 {layout.width} {layout.height}">'
        f'<title id="{pid}-title">{escape(title)}</title>'
    )


def line_chart(
    *,
    plot_id: str,
    title: str,
    x_label: str,
    y_label: str,
    series: Sequence[Series],
    marks: Sequence[Mark] = (),
) -> str:
    """Lines with points and confidence-interval bars; y from 0 to 1 (accuracies)."""
    xs = sorted({p.x for s in series for p in s.points} | {m.x for m in marks})
    x_ticks = xs if _readable(xs, FULL) else nice_ticks(max(xs, default=1.0))
    frame = _Frame(x_ticks, [0.0, 0.25, 0.5, 0.75, 1.0], FULL)
    parts = [_open(plot_id, title, FULL), *frame.axes(title, x_label, y_label)]
    for s in series:
        pts = [p for p in s.points if math.isfinite(p.x) and math.isfinite(p.y)]
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        colour = escape(s.colour)
        body = [
            f'<g class="series" data-series="{escape(s.label)}" stroke="{colour}" fill="{colour}">'
        ]
        if len(pts) > 1:
            coords = " ".join(f"{_num(frame.px(p.x))},{_num(frame.py(p.y))}" for p in pts)
            body.append(f'<polyline fill="none" stroke-width="2"{dash} points="{coords}"/>')
        for p in pts:
            if p.lo is not None and p.hi is not None:
                body.append(
                    f'<line class="ci" x1="{_num(frame.px(p.x))}" x2="{_num(frame.px(p.x))}" '
                    f'y1="{_num(frame.py(p.lo))}" y2="{_num(frame.py(p.hi))}"/>'
                )
            body.append(
                f'<circle cx="{_num(frame.px(p.x))}" cy="{_num(frame.py(p.y))}" r="3.5">'
                f"<title>{escape(s.label)}: {escape(_label(p.y))} at {escape(_label(p.x))}"
                "</title></circle>"
            )
        body.append("</g>")
        parts.extend(body)
    for m in marks:
        x, y = frame.px(m.x), frame.py(m.y)
        parts.append(
            f'<line class="required" x1="{_num(x - 10)}" x2="{_num(x + 10)}" y1="{_num(y)}" '
            f'y2="{_num(y)}" stroke="{REQUIRED_COLOUR}" stroke-width="3">'
            f"<title>{escape(m.label)}</title></line>"
        )
    legend = [(s.label, s.colour, s.dashed) for s in series]
    if marks:
        legend.append(("required by policy", REQUIRED_COLOUR, False))
    parts.extend(_legend(legend, FULL))
    parts.append("</svg>")
    return "".join(parts)


def _legend(entries: Sequence[tuple[str, str, bool]], layout: Layout) -> list[str]:
    """One row under the axes: a line sample and a label per entry."""
    parts = []
    x, y = float(layout.left), layout.height - 14
    for label, colour, dashed in entries:
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        parts.append(
            f'<g class="legend"><line x1="{_num(x)}" x2="{_num(x + 22)}" y1="{y - 4}" '
            f'y2="{y - 4}" stroke="{escape(colour)}" stroke-width="2"{dash}/>'
            f'<text x="{_num(x + 28)}" y="{y}">{escape(label)}</text></g>'
        )
        # An estimate of the label's width at 11px; SVG text cannot be measured here.
        x += 40 + 6.2 * len(label)
    return parts


def reliability_chart(*, plot_id: str, title: str, bins: Sequence[ReliabilityBin]) -> str:
    """A compact reliability diagram (Guo et al. 2017, https://arxiv.org/abs/1706.04599):
    accuracy per confidence bin as bars, each bin's mean confidence as a dot, the diagonal
    of perfect calibration, and above the axes the number of samples in each bin, so a
    reader sees which bars rest on a handful of samples. Empty bins draw nothing.

    The legend is left to the page, which shows several panels under one caption.
    """
    ece = bins_calibration_error(bins)
    full_title = f"{title} (ECE {ece:.3f})" if math.isfinite(ece) else title
    layout = compact(len(bins))
    frame = _Frame([0.0, 0.25, 0.5, 0.75, 1.0], [0.0, 0.25, 0.5, 0.75, 1.0], layout)
    parts = [_open(plot_id, full_title, layout), *frame.axes(full_title, "confidence", "accuracy")]
    count_y = layout.top - 5
    parts.append(
        f'<text class="count" x="{layout.left - 6}" y="{count_y}" text-anchor="end">n</text>'
    )
    for b in bins:
        if b.count == 0:
            continue
        x0, x1 = frame.px(b.lo), frame.px(b.hi)
        top = min(frame.py(b.accuracy), frame.py(0) - MIN_BAR_PX)
        parts.append(
            f'<rect class="bin" x="{_num(x0 + 1)}" y="{_num(top)}" width="{_num(x1 - x0 - 2)}" '
            f'height="{_num(frame.py(0) - top)}" fill="{CANDIDATE_COLOUR}" fill-opacity="0.75">'
            f"<title>confidence {b.lo:.2f}-{b.hi:.2f}: accuracy {b.accuracy:.3f}, mean "
            f"confidence {b.confidence:.3f}, n={b.count}</title></rect>"
            f'<circle cx="{_num(frame.px(b.confidence))}" cy="{_num(frame.py(b.confidence))}" '
            f'r="2.5" fill="{REQUIRED_COLOUR}"/>'
            f'<text class="count" x="{_num((x0 + x1) / 2)}" y="{count_y}" '
            f'text-anchor="middle">{escape(short_count(b.count))}</text>'
        )
    # The diagonal (perfect calibration) goes over the bars so it stays visible.
    parts.append(
        f'<line class="diagonal" x1="{_num(frame.px(0))}" y1="{_num(frame.py(0))}" '
        f'x2="{_num(frame.px(1))}" y2="{_num(frame.py(1))}" stroke-dasharray="4 4"/>'
    )
    parts.append("</svg>")
    return "".join(parts)
