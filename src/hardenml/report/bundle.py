"""Every registered report of one gate decision, written together into the reports folder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hardenml.config import HardenConfig
from hardenml.gate import GateDecision
from hardenml.ledger import Event, RunRecord, findings_state
from hardenml.records import RUN_COMPLETED
from hardenml.report.calibration import Reliability
from hardenml.report.common import Findings
from hardenml.report.formats import HtmlReport, JUnitReport, ModelCardReport, SarifReport
from hardenml.report.registry import (
    ReportContext,
    ReportLookupError,
    available_reports,
    report_format,
)

JUNIT_NAME = JUnitReport.filename
SARIF_NAME = SarifReport.filename
HTML_NAME = HtmlReport.filename
MODEL_CARD_NAME = ModelCardReport.filename


def baseline_run(events: Sequence[Event], run: RunRecord) -> dict[str, Any] | None:
    """The model before this one: the latest earlier run of the same model name whose
    weights differ (a patched or retrained model is compared with what it replaces)."""
    for event in reversed(events):
        if event.kind != RUN_COMPLETED or event.seq >= run.seq:
            continue
        p = event.payload
        if p.get("model") == run.model and p.get("model_sha256") != run.model_sha256:
            return dict(p)
    return None


def default_baseline(
    decision: GateDecision, ledger_events: Sequence[Event] | None
) -> dict[str, Any] | None:
    """What the candidate is compared with: the last released model when the candidate is
    another file, else the previous model of the same name found in the ledger."""
    released = decision.released
    if (
        released is not None
        and released.model_sha256 != decision.run.model_sha256
        and released.measurements
    ):
        return {**released.to_payload(), "ledger_seq": released.ledger_seq}
    if ledger_events is None:
        return None
    return baseline_run(ledger_events, decision.run)


def repo_root(start: Path) -> Path | None:
    """The nearest folder at or above `start` holding `.git`, for repository-relative URIs."""
    for folder in (start.resolve(), *start.resolve().parents):
        if (folder / ".git").exists():
            return folder
    return None


def report_files(folder: Path) -> list[Path]:
    """Where every registered format writes in `folder` (a format whose plugin no longer
    loads is left out: its file, if any, is not ours to judge)."""
    paths = []
    for name in available_reports():
        try:
            paths.append(folder / report_format(name).filename)
        except (ReportLookupError, ImportError):
            continue
    return paths


def write_all_reports(
    folder: Path,
    config: HardenConfig,
    decision: GateDecision,
    *,
    findings: Findings | None = None,
    ledger_events: Sequence[Event] | None = None,
    baseline: Mapping[str, Any] | None = None,
    reliability: Reliability | None = None,
    formats: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Every registered report format (or those named in `formats`), side by side in
    `folder`; returns the path written for each format's name.

    Findings come from `findings`, else from folding `ledger_events`; the baseline is
    `baseline`, else the one `default_baseline` picks.
    """
    if findings is None and ledger_events is not None:
        findings = findings_state(list(ledger_events))
    if baseline is None:
        baseline = default_baseline(decision, ledger_events)
    context = ReportContext(
        config=config,
        decision=decision,
        findings=findings,
        baseline=baseline,
        reliability=reliability,
        repo_root=repo_root(config.root),
    )
    names = available_reports() if formats is None else list(formats)
    return {name: report_format(name).write(folder, context) for name in names}
