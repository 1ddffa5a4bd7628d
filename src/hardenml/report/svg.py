"""Hand-drawn inline SVG charts for the HTML report: no plotting library, no scripts.

Every string that reaches the markup goes through `html.escape`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from itertools import pairwise

from hardenml.report.calibration import ReliabilityBin, bins_calibration_error

WIDTH, HEIGHT = 560, 340
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 30, 72
# Data stay this far inside the axes, so points and marks at the ends are not clipped.
PAD = 12
CANDIDATE_COLOUR = "#1f6feb"
BASELINE_COLOUR = "#d9822b"
REQUIRED_COLOUR = "#cf222e"


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


def nice_ticks(hi: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least `hi` (1, 2 or 5 times a power of ten apart)."""
    if hi <= 0 or not math.isfinite(hi):
        return [0.0, 1.0]
    raw = hi / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return [i * step for i in range(math.ceil(hi / step - 1e-9) + 1)]


def _readable(xs: Sequence[float]) -> bool:
    """Whether the measured budgets themselves can label the x axis without overlapping."""
    if not 2 <= len(xs) <= 8 or xs[0] != 0 or xs[-1] <= 0:
        return False
    span = WIDTH - LEFT - RIGHT
    return all((b - a) / xs[-1] * span >= 30 for a, b in pairwise(xs))


class _Frame:
    """Maps data coordinates to the drawing area and draws axes, grid and labels."""

    def __init__(self, x_ticks: list[float], y_ticks: list[float]) -> None:
        self.x_ticks, self.y_ticks = x_ticks, y_ticks
        self.x_max = max(x_ticks[-1], 1e-12)
        self.y_max = max(y_ticks[-1], 1e-12)

    def px(self, x: float) -> float:
        return LEFT + PAD + (WIDTH - LEFT - RIGHT - 2 * PAD) * x / self.x_max

    def py(self, y: float) -> float:
        return HEIGHT - BOTTOM - PAD - (HEIGHT - TOP - BOTTOM - 2 * PAD) * y / self.y_max

    def axes(self, title: str, x_label: str, y_label: str) -> list[str]:
        parts = [
            f'<text class="title" x="{WIDTH / 2}" y="18" text-anchor="middle">'
            f"{escape(title)}</text>"
        ]
        for y in self.y_ticks:
            parts.append(
                f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" '
                f'y1="{_num(self.py(y))}" y2="{_num(self.py(y))}"/>'
                f'<text class="tick" x="{LEFT - 6}" y="{_num(self.py(y) + 4)}" '
                f'text-anchor="end">{escape(_label(y))}</text>'
            )
        for x in self.x_ticks:
            parts.append(
                f'<line class="grid" x1="{_num(self.px(x))}" x2="{_num(self.px(x))}" '
                f'y1="{TOP}" y2="{HEIGHT - BOTTOM}"/>'
                f'<text class="tick" x="{_num(self.px(x))}" y="{HEIGHT - BOTTOM + 16}" '
                f'text-anchor="middle">{escape(_label(x))}</text>'
            )
        parts.append(
            f'<rect class="axes" x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" '
            f'height="{HEIGHT - TOP - BOTTOM}"/>'
            f'<text class="axis-label" x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - BOTTOM + 34}" '
            f'text-anchor="middle">{escape(x_label)}</text>'
            f'<text class="axis-label" transform="rotate(-90)" x="{-(TOP + HEIGHT - BOTTOM) / 2}" '
            f'y="16" text-anchor="middle">{escape(y_label)}</text>'
        )
        return parts


def _open(plot_id: str, title: str) -> str:
    pid = escape(plot_id)
    return (
        f'<svg class="plot" data-plot="{pid}" role="img" aria-labelledby="{pid}-title" '
        f'width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}">'
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
    x_ticks = xs if _readable(xs) else nice_ticks(max(xs, default=1.0))
    frame = _Frame(x_ticks, [0.0, 0.25, 0.5, 0.75, 1.0])
    parts = [_open(plot_id, title), *frame.axes(title, x_label, y_label)]
    for s in series:
        pts = [p for p in s.points if math.isfinite(p.x) and math.isfinite(p.y)]
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        body = [
            f'<g class="series" data-series="{escape(s.label)}" stroke="{s.colour}" '
            f'fill="{s.colour}">'
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
    parts.extend(_legend(legend))
    parts.append("</svg>")
    return "".join(parts)


def _legend(entries: Sequence[tuple[str, str, bool]]) -> list[str]:
    """One row under the axes: a line sample and a label per entry."""
    parts = []
    x, y = float(LEFT), HEIGHT - 14
    for label, colour, dashed in entries:
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        parts.append(
            f'<g class="legend"><line x1="{_num(x)}" x2="{_num(x + 22)}" y1="{y - 4}" '
            f'y2="{y - 4}" stroke="{colour}" stroke-width="2"{dash}/>'
            f'<text x="{_num(x + 28)}" y="{y}">{escape(label)}</text></g>'
        )
        # An estimate of the label's width at 11px; SVG text cannot be measured here.
        x += 40 + 6.2 * len(label)
    return parts


def reliability_chart(*, plot_id: str, title: str, bins: Sequence[ReliabilityBin]) -> str:
    """Accuracy per confidence bin as bars against the diagonal of perfect calibration."""
    ece = bins_calibration_error(bins)
    full_title = f"{title} (ECE {ece:.3f})" if math.isfinite(ece) else title
    frame = _Frame([0.0, 0.25, 0.5, 0.75, 1.0], [0.0, 0.25, 0.5, 0.75, 1.0])
    parts = [_open(plot_id, full_title), *frame.axes(full_title, "confidence", "accuracy")]
    for b in bins:
        if b.count == 0:
            continue
        x0, x1 = frame.px(b.lo), frame.px(b.hi)
        top = frame.py(b.accuracy)
        parts.append(
            f'<rect class="bin" x="{_num(x0 + 1)}" y="{_num(top)}" width="{_num(x1 - x0 - 2)}" '
            f'height="{_num(frame.py(0) - top)}" fill="{CANDIDATE_COLOUR}" fill-opacity="0.75">'
            f"<title>confidence {b.lo:.2f}-{b.hi:.2f}: accuracy {b.accuracy:.3f}, mean "
            f"confidence {b.confidence:.3f}, n={b.count}</title></rect>"
            f'<circle cx="{_num(frame.px(b.confidence))}" cy="{_num(frame.py(b.confidence))}" '
            f'r="3" fill="{REQUIRED_COLOUR}"/>'
        )
    # The diagonal (perfect calibration) goes over the bars so it stays visible.
    parts.append(
        f'<line class="diagonal" x1="{_num(frame.px(0))}" y1="{_num(frame.py(0))}" '
        f'x2="{_num(frame.px(1))}" y2="{_num(frame.py(1))}" stroke-dasharray="4 4"/>'
    )
    parts.extend(
        _legend(
            [
                ("accuracy in bin", CANDIDATE_COLOUR, False),
                ("mean confidence", REQUIRED_COLOUR, False),
            ]
        )
    )
    parts.append("</svg>")
    return "".join(parts)
