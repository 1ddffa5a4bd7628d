"""The status page (`GET /`): one self-contained HTML page, no script, no external asset.

Traffic over the last minutes, the confidence of recent predictions, drift per feature,
the alerts, and which model version serves which share, drawn as inline SVG. Every value
that came from outside (versions, client ids, feature names, alert messages) is escaped.
The page refreshes itself every 10 seconds (`<meta http-equiv="refresh">`).
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hardenml.monitor.service import MonitorService

WIDTH, HEIGHT, PAD = 560, 160, 30
# Features shown in the drift plot: the ones with the smallest p-values.
DRIFT_FEATURES_SHOWN = 30
TRAFFIC_WINDOW_S = 300

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1b1f24;background:#fafbfc}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem}
section{background:#fff;border:1px solid #d8dee4;border-radius:6px;padding:.8rem 1rem;
margin:.8rem 0}
table{border-collapse:collapse}
td,th{border-bottom:1px solid #eaeef2;padding:.25rem .6rem;text-align:left}
.raised{color:#b42318;font-weight:600}.clear{color:#067647}.muted{color:#667085}
svg.plot{display:block;background:#fff}svg text{font-size:10px;fill:#475467}
"""


_NONE = '<tr><td class="muted" colspan="{}">none</td></tr>'


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _axes(title: str, plot: str) -> str:
    return (
        f'<svg class="plot" data-plot="{_e(plot)}" role="img" aria-label="{_e(title)}" '
        f'width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        'xmlns="http://www.w3.org/2000/svg">'
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - 5}" y2="{HEIGHT - PAD}" '
        'stroke="#98a2b3"/>'
        f'<line x1="{PAD}" y1="5" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#98a2b3"/>'
    )


def _bars(
    values: Sequence[float],
    labels: Sequence[str],
    top: float,
    plot: str,
    title: str,
    color: str = "#2e90fa",
) -> str:
    """A bar chart of `values` (0..`top`) with a label under each bar."""
    out = [_axes(title, plot)]
    n = max(len(values), 1)
    span = (WIDTH - PAD - 10) / n
    for i, (value, label) in enumerate(zip(values, labels, strict=True)):
        h = 0.0 if top <= 0 else (HEIGHT - PAD - 10) * min(value, top) / top
        x = PAD + i * span + 1
        out.append(
            f'<rect class="bin" x="{x:.1f}" y="{HEIGHT - PAD - h:.1f}" '
            f'width="{max(span - 2, 1):.1f}" height="{h:.1f}" fill="{color}">'
            f"<title>{_e(label)}: {value:.4g}</title></rect>"
        )
        if n <= 30:
            out.append(
                f'<text x="{x + span / 2:.1f}" y="{HEIGHT - PAD + 12}" '
                f'text-anchor="middle">{_e(label)}</text>'
            )
    out.append(f'<text x="2" y="12">{top:.3g}</text><text x="2" y="{HEIGHT - PAD}">0</text>')
    out.append("</svg>")
    return "".join(out)


def traffic_plot(per_second: Sequence[tuple[int, int]], now: float) -> str:
    """Predictions per second over the last `TRAFFIC_WINDOW_S` seconds, as a line."""
    start = int(now) - TRAFFIC_WINDOW_S
    counts = dict(per_second)
    series = [counts.get(start + i, 0) for i in range(TRAFFIC_WINDOW_S + 1)]
    top = max(max(series), 1)
    points = " ".join(
        f"{PAD + (WIDTH - PAD - 10) * i / TRAFFIC_WINDOW_S:.1f},"
        f"{HEIGHT - PAD - (HEIGHT - PAD - 10) * v / top:.1f}"
        for i, v in enumerate(series)
    )
    return (
        _axes("predictions per second", "traffic")
        + f'<polyline points="{points}" fill="none" stroke="#2e90fa" stroke-width="1.5"/>'
        + f'<text x="2" y="12">{top}</text>'
        + f'<text x="{PAD}" y="{HEIGHT - 8}">-{TRAFFIC_WINDOW_S} s</text>'
        + f'<text x="{WIDTH - 30}" y="{HEIGHT - 8}">now</text></svg>'
    )


def confidence_plot(confidences: Sequence[float]) -> str:
    bins = [0] * 10
    for value in confidences:
        bins[min(int(value * 10), 9)] += 1
    labels = [f"{i / 10:.1f}" for i in range(10)]
    return _bars(bins, labels, max(max(bins), 1), "confidence", "confidence of recent predictions")


def drift_plot(readings: Sequence[dict[str, Any]]) -> str:
    """1 - p of the per-feature drift tests with the smallest p-values."""
    per_feature = [
        r for r in readings if r.get("feature") is not None and r.get("p_value") is not None
    ]
    per_feature.sort(key=lambda r: float(r["p_value"]))
    shown = per_feature[:DRIFT_FEATURES_SHOWN]
    values = [1.0 - float(r["p_value"]) for r in shown]
    labels = [str(r["feature"]) for r in shown]
    return _bars(values, labels, 1.0, "drift", "1 - p per feature", color="#f79009")


def shares_plot(shares: dict[str, float]) -> str:
    out = [
        f'<svg class="plot" data-plot="shares" role="img" aria-label="traffic share per version" '
        f'width="{WIDTH}" height="40" viewBox="0 0 {WIDTH} 40" xmlns="http://www.w3.org/2000/svg">'
    ]
    x = 0.0
    colors = ["#2e90fa", "#12b76a", "#f79009"]
    for i, (version, share) in enumerate(sorted(shares.items())):
        w = WIDTH * share
        out.append(
            f'<rect class="bin" x="{x:.1f}" y="5" width="{w:.1f}" height="30" '
            f'fill="{colors[i % len(colors)]}"><title>{_e(version)}: {share:.0%}</title></rect>'
        )
        x += w
    out.append("</svg>")
    return "".join(out)


def _rows(rows: Sequence[Sequence[Any]], raw_cells: frozenset[int] = frozenset()) -> str:
    return "".join(
        "<tr>"
        + "".join(f"<td>{cell if i in raw_cells else _e(cell)}</td>" for i, cell in enumerate(row))
        + "</tr>"
        for row in rows
    )


def status_page(service: MonitorService) -> str:
    now = time.time()
    state = service.status()
    per_second, _, confidences = service.traffic.snapshot()
    watch = state["watch"] or {}
    readings: list[dict[str, Any]] = watch.get("readings", [])
    alerts: dict[str, Any] = watch.get("alerts", {"active": [], "events": []})
    versions = state["versions"]
    version_rows = [
        (
            v["version"],
            v["role"],
            f"{state['shares'].get(v['version'], 0.0):.0%}",
            state["predictions_by_version"].get(v["version"], 0),
        )
        for v in versions
    ]
    alert_rows = [
        (
            '<span class="raised">raised</span>',
            a["rule"],
            a["severity"],
            a["owner"],
            _when(a["since"]),
            a["feature"] or "",
            a["detail"],
        )
        for a in alerts["active"]
    ]
    event_rows = [
        (e["kind"], e["rule"], e.get("feature") or "", _when(e["at"]), e.get("detail", ""))
        for e in reversed(alerts["events"])
    ]
    # The per-feature KS tests are the drift plot; every other reading gets a row.
    listed = [r for r in readings if r["feature"] is None or r["detector"] != "feature_drift"]
    reading_rows = [
        (
            r["detector"],
            r["feature"] or "(overall)",
            "" if r.get("p_value") is None else f"{float(r['p_value']):.4g}",
            f"{float(r.get('statistic', 0.0)):.4g}",
            "yes" if r.get("flagged") else "no",
            r.get("n", ""),
        )
        for r in listed
    ]
    telemetry = state["telemetry"]
    no_model = '<p class="muted">no model served (ingest only)</p>'
    shares = shares_plot(state["shares"]) if state["shares"] else no_model
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="10">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>hardenml monitor: {_e(state["model"])}</title>
<style>{_STYLE}</style></head>
<body>
<h1>hardenml monitor: {_e(state["model"])}</h1>
<p class="muted">up {state["uptime_s"]:.0f} s; telemetry {telemetry["written"]} written,
{telemetry["backlog"]} waiting</p>
<section id="versions"><h2>Versions and traffic share</h2>
{shares}
<table><thead><tr><th>version</th><th>role</th><th>share</th><th>predictions</th></tr></thead>
<tbody>{_rows(version_rows)}</tbody></table></section>
<section id="traffic"><h2>Traffic (predictions per second)</h2>
{traffic_plot(per_second, now)}</section>
<section id="confidence"><h2>Confidence of recent predictions</h2>
{confidence_plot(confidences)}</section>
<section id="drift"><h2>Drift per feature (1 - p, smallest p first)</h2>
{drift_plot(readings)}
<table><thead><tr><th>detector</th><th>feature</th><th>p-value</th><th>statistic</th>
<th>flagged</th><th>n</th></tr></thead>
<tbody>{_rows(reading_rows)}</tbody></table></section>
<section id="alerts"><h2>Alerts</h2>
<table><thead><tr><th>state</th><th>rule</th><th>severity</th><th>owner</th><th>since</th>
<th>feature</th><th>detail</th></tr></thead>
<tbody>{_rows(alert_rows, frozenset({0})) or _NONE.format(7)}</tbody></table>
<h3>Recent alert events</h3>
<table><thead><tr><th>event</th><th>rule</th><th>feature</th><th>at</th><th>detail</th></tr>
</thead><tbody>{_rows(event_rows) or _NONE.format(5)}</tbody></table></section>
</body></html>
"""
