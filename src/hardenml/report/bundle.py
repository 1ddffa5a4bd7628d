"""Every report of one gate decision, written together into the config's reports folder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hardenml.config import HardenConfig
from hardenml.gate import GateDecision
from hardenml.ledger import Event, RunRecord, findings_state
from hardenml.report.calibration import Reliability
from hardenml.report.common import Findings
from hardenml.report.html_report import write_html
from hardenml.report.junit import write_junit
from hardenml.report.model_card import write_model_card
from hardenml.report.sarif import write_sarif

JUNIT_NAME = "report.xml"
SARIF_NAME = "report.sarif"
HTML_NAME = "report.html"
MODEL_CARD_NAME = "model-card.md"


def baseline_run(events: Sequence[Event], run: RunRecord) -> dict[str, Any] | None:
    """The model before this one: the latest earlier run of the same model name whose
    weights differ (a patched or retrained model is compared with what it replaces)."""
    for event in reversed(events):
        if event.kind != "run.completed" or event.seq >= run.seq:
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
        and released.get("model_sha256") != decision.run.model_sha256
        and released.get("measurements")
    ):
        return dict(released)
    if ledger_events is None:
        return None
    return baseline_run(ledger_events, decision.run)


def repo_root(start: Path) -> Path | None:
    """The nearest folder at or above `start` holding `.git`, for repository-relative URIs."""
    for folder in (start.resolve(), *start.resolve().parents):
        if (folder / ".git").exists():
            return folder
    return None


def write_all_reports(
    folder: Path,
    config: HardenConfig,
    decision: GateDecision,
    *,
    findings: Findings | None = None,
    ledger_events: Sequence[Event] | None = None,
    baseline: Mapping[str, Any] | None = None,
    reliability: Reliability | None = None,
) -> dict[str, Path]:
    """JUnit XML, SARIF, HTML and the model-card section, side by side in `folder`.

    Findings come from `findings`, else from folding `ledger_events`; the baseline is
    `baseline`, else the one `default_baseline` picks.
    """
    if findings is None and ledger_events is not None:
        findings = findings_state(list(ledger_events))
    if baseline is None:
        baseline = default_baseline(decision, ledger_events)
    return {
        "junit": write_junit(folder / JUNIT_NAME, config, decision),
        "sarif": write_sarif(
            folder / SARIF_NAME, config, decision, findings, repo_root=repo_root(config.root)
        ),
        "html": write_html(
            folder / HTML_NAME,
            config,
            decision,
            findings,
            baseline=baseline,
            reliability=reliability,
        ),
        "model_card": write_model_card(
            folder / MODEL_CARD_NAME,
            config,
            decision,
            findings,
            baseline=baseline,
            reliability=reliability,
        ),
    }
