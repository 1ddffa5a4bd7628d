"""What changed since a release, in Markdown for stakeholders, from the ledger alone.

`changes_since(events, model, ref)` picks the release `ref` names (its ledger seq, a
prefix of its model's sha256, or a date: the last release on or before it), and the
window after it up to the latest later release (or the ledger's head when there is none).
The summary lists the findings opened and fixed in the window, robustness before and after
(the measurements each release event carries, with their intervals), and the patches made,
with their lineage. Every line cites the ledger events it comes from (`#seq`); nothing is
computed that the events do not hold. Read-only: it appends nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from hardenml.ledger import Event, findings_state
from hardenml.records import (
    MODEL_PATCHED,
    MODEL_RELEASED,
    RUN_COMPLETED,
    Measurement,
    ModelPatched,
    ModelReleased,
    RunCompleted,
)


class ChangesError(Exception):
    """The reference names no release; the message lists the releases there are."""


@dataclass(frozen=True)
class Release:
    seq: int
    ts: str
    record: ModelReleased


def releases(events: list[Event], model: str) -> list[Release]:
    return [
        Release(e.seq, e.ts, ModelReleased.from_payload(e.payload, seq=e.seq))
        for e in events
        if e.kind == MODEL_RELEASED and e.payload.get("model") == model
    ]


def resolve_release(events: list[Event], model: str, ref: str) -> Release:
    """The release `ref` names: a ledger seq (`12` or `#12`), a sha256 prefix (6+ hex
    digits), or a date `YYYY-MM-DD` (the last release on or before that day)."""
    known = releases(events, model)
    shown = ", ".join(f"#{r.seq} {r.record.model_sha256[:12]} {r.ts[:10]}" for r in known)
    listing = f"releases of {model!r}: {shown or 'none recorded'}"
    text = ref.strip().lstrip("#")
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        try:
            day = date.fromisoformat(text).isoformat()
        except ValueError:
            raise ChangesError(f"--since {ref!r} is not a valid date; {listing}") from None
        before = [r for r in known if r.ts[:10] <= day]
        if not before:
            raise ChangesError(f"no release of {model!r} on or before {day}; {listing}")
        return before[-1]
    if text.isdigit():
        match = [r for r in known if r.seq == int(text)]
        if match:
            return match[0]
    if re.fullmatch(r"[0-9a-fA-F]{6,64}", text):
        match = [r for r in known if r.record.model_sha256.startswith(text.lower())]
        if len(match) > 1 and len({r.record.model_sha256 for r in match}) > 1:
            raise ChangesError(f"--since {ref!r} matches several models; {listing}")
        if match:
            return match[-1]
    raise ChangesError(
        f"--since {ref!r} names no release (a release's ledger seq, a model sha256 prefix of "
        f"6+ hex digits, or a date YYYY-MM-DD); {listing}"
    )


def _measurements(record: ModelReleased) -> dict[str, Measurement]:
    return {m.key: m for m in (Measurement.from_dict(d) for d in record.measurements)}


def _shown(m: Measurement | None) -> str:
    if m is None:
        return "not measured"
    return f"{m.value:.3f} [{m.ci_low:.3f}, {m.ci_high:.3f}] (n = {m.n})"


def _latest_run(window: list[Event], model: str) -> tuple[int, RunCompleted] | None:
    runs = [
        (e.seq, RunCompleted.from_payload(e.payload))
        for e in window
        if e.kind == RUN_COMPLETED and e.payload.get("model") == model
    ]
    return runs[-1] if runs else None


def changes_since(events: list[Event], model: str, ref: str) -> str:
    """The Markdown summary of what changed after the release `ref` names."""
    start = resolve_release(events, model, ref)
    later = [r for r in releases(events, model) if r.seq > start.seq]
    end = later[-1] if later else None
    stop = end.seq if end is not None else (events[-1].seq if events else start.seq)
    window = [e for e in events if start.seq < e.seq <= stop]
    state = findings_state(events)
    a = start.record
    lines = [f"# Changes to {model} since release #{start.seq}", ""]
    lines.append(
        f"- from: release #{start.seq} ({start.ts}), model sha256 `{a.model_sha256[:12]}`, "
        f"{a.path}{' (forced)' if a.forced else ''}"
    )
    if end is not None:
        lines.append(
            f"- to: release #{end.seq} ({end.ts}), model sha256 "
            f"`{end.record.model_sha256[:12]}`, {end.record.path}"
            f"{' (forced)' if end.record.forced else ''}"
        )
    else:
        lines.append(f"- to: the ledger's head (#{stop}); no later release is recorded")
    lines += ["", "## Findings", ""]
    opened = [e for e in window if e.kind in ("finding.opened", "finding.reopened")]
    fixed = [e for e in window if e.kind in ("finding.fixed", "finding.resolved")]
    for title, group in (("Opened", opened), ("Fixed", fixed)):
        lines.append(f"{title}:")
        for e in group:
            fid = str(e.payload.get("finding_id", "?"))
            known = state.get(fid)
            name = e.payload.get("title") or (known.title if known else "")
            severity = e.payload.get("severity") or (known.severity if known else "")
            verb = e.kind.removeprefix("finding.")
            lines.append(f"- {fid} ({severity}) {name}: {verb} (#{e.seq})")
        if not group:
            lines.append("- none")
        lines.append("")
    lines += ["## Robustness", ""]
    before = _measurements(a)
    if end is not None:
        after, after_src = _measurements(end.record), f"release #{end.seq}"
    else:
        run = _latest_run(window, model)
        after = {} if run is None else {m.key: m for m in run[1].measurements}
        after_src = "no run since" if run is None else f"run {run[1].run_id} (#{run[0]})"
    lines.append(
        f"Intervals at each measurement's own confidence; before: release #{start.seq} "
        f"(run {a.run_id or 'none'}), after: {after_src}."
    )
    lines += ["", "| metric | before | after | change |", "|---|---|---|---|"]
    for key in sorted(set(before) | set(after)):
        b, c = before.get(key), after.get(key)
        change = f"{c.value - b.value:+.3f}" if b is not None and c is not None else "-"
        lines.append(f"| `{key}` | {_shown(b)} | {_shown(c)} | {change} |")
    if not (before or after):
        lines.append("| - | no measurements recorded | | |")
    lines += ["", "## Patches", ""]
    patches = [
        (e.seq, ModelPatched.from_payload(e.payload)) for e in window if e.kind == MODEL_PATCHED
    ]
    for seq, p in patches:
        eps = p.params.get("eps")
        lines.append(
            f"- #{seq} `{p.patch}`{f' at eps {eps:g}' if isinstance(eps, int | float) else ''}: "
            f"`{p.parent_sha256[:12]}` -> `{p.artifact_sha256[:12]}` ({p.artifact})"
        )
    if not patches:
        lines.append("- none")
    if end is not None:
        lines += ["", "Lineage of the later release:", ""]
        lines += _lineage(events, end.record.model_sha256, a.model_sha256)
    return "\n".join(lines) + "\n"


def _lineage(events: list[Event], sha: str, stop_at: str) -> list[str]:
    """The chain of patches from `sha` back to `stop_at` (or as far as the ledger goes)."""
    by_artifact = {
        e.payload.get("artifact_sha256"): (e.seq, ModelPatched.from_payload(e.payload))
        for e in events
        if e.kind == MODEL_PATCHED
    }
    out, seen = [], set()
    while sha in by_artifact and sha != stop_at and sha not in seen:
        seen.add(sha)
        seq, p = by_artifact[sha]
        out.append(f"- `{sha[:12]}` made by `{p.patch}` from `{p.parent_sha256[:12]}` (#{seq})")
        sha = p.parent_sha256
    reached = "the earlier release" if sha == stop_at else "a model with no recorded lineage"
    out.append(f"- `{sha[:12]}`: {reached}")
    return out
