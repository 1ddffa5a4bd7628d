"""`hardenml report compliance`: each regulatory requirement the threat model names, with
the checks, findings and evidence behind it, read from the ledger and written nowhere.

A requirement's evidence is what the ledger holds for the checks and threats
`[[requirements]]` maps to it: the latest run's measurements (judged by today's policy,
as the gate would), the findings about its threats and checks with their stored
adversarial examples, and the gate decisions, validations and releases of that run's
model. Where the ledger holds none of that, the report says "no evidence" rather than
letting an empty row read as compliance.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from hardenml._version import __version__
from hardenml.config import HardenConfig, RequirementConfig
from hardenml.gate import decide
from hardenml.gate.decision import RELEASE_EVENT, VALIDATION_EVENT, last_release, latest_validation
from hardenml.ledger import Event, FindingState, RunRecord, findings_state
from hardenml.records import GATE_DECIDED, RUN_COMPLETED, fingerprint, metric_key
from hardenml.report.common import json_safe
from hardenml.report.regulation import catalogue_version, requirement

NO_EVIDENCE = "no evidence"


@dataclass(frozen=True)
class CheckEvidence:
    """One policy check of the latest run, as the gate judges it today."""

    name: str
    result: str  # "pass", "fail", "undecided" or "not measured"
    value: float | None
    ci: tuple[float, float] | None
    n: int | None
    threshold: float | None  # None when no run was judged against the policy


@dataclass(frozen=True)
class ThreatEvidence:
    """What the latest run measured of one threat: robust accuracy at each budget."""

    threat: str
    measured: list[dict[str, Any]]  # {metric, budget, value, ci, n}


@dataclass(frozen=True)
class FindingEvidence:
    finding_id: str
    severity: str
    status: str
    title: str
    taxonomy: dict[str, Any]
    files: list[dict[str, Any]]  # stored evidence: path, sha256, count
    events: list[int]  # ledger seq of each event of its history


@dataclass(frozen=True)
class LedgerEvidence:
    seq: int
    kind: str
    event_id: str
    ts: str
    summary: str


@dataclass(frozen=True)
class RequirementStatus:
    id: str
    section: str
    title: str
    summary: str
    source: str
    source_url: str
    rationale: str
    checks: list[CheckEvidence]
    threats: list[ThreatEvidence]
    findings: list[FindingEvidence]
    events: list[LedgerEvidence]

    @property
    def has_evidence(self) -> bool:
        measured = any(c.result != "not measured" for c in self.checks)
        return measured or any(t.measured for t in self.threats) or bool(self.findings)


@dataclass(frozen=True)
class ComplianceReport:
    project: str
    model: str
    catalogue_version: str
    generated_at: str
    ledger_events: int
    ledger_head: str
    run_id: str | None
    run_seq: int | None
    requirements: list[RequirementStatus]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for entry, req in zip(data["requirements"], self.requirements, strict=True):
            entry["has_evidence"] = req.has_evidence
        return {"tool": {"name": "hardenml", "version": __version__}, **data}


def _latest_run(events: Sequence[Event], model: str) -> RunRecord | None:
    for event in reversed(events):
        if event.kind == RUN_COMPLETED and event.payload.get("model") == model:
            p = event.payload
            return RunRecord(p["run_id"], p["model"], p["model_sha256"], p, event.seq)
    return None


def _check_evidence(
    config: HardenConfig, run: RunRecord | None, events: list[Event]
) -> dict[str, CheckEvidence]:
    if run is None:
        return {}
    decision = decide(
        config,
        run,
        findings_state(events),
        validation=latest_validation(events, run.model_sha256),
        released=last_release(events, run.model),
    )
    out = {}
    for check in decision.checks:
        m = check.measurement
        out[check.name] = CheckEvidence(
            name=check.name,
            result="not measured" if m is None else check.decision,
            value=None if m is None else m.value,
            ci=None if m is None else (m.ci_low, m.ci_high),
            n=None if m is None else m.n,
            threshold=check.threshold,
        )
    return out


def _threat_evidence(threat: str, run: RunRecord | None) -> ThreatEvidence:
    measured = [
        {
            "metric": m["metric"],
            "budget": m["budget"],
            "value": m["value"],
            "ci": [m["ci_low"], m["ci_high"]],
            "n": m["n"],
        }
        for m in (run.payload.get("measurements", []) if run is not None else [])
        if m.get("threat") == threat
    ]
    return ThreatEvidence(threat, measured)


def _findings_for(
    req: RequirementConfig, model: str, state: dict[str, FindingState], config: HardenConfig
) -> list[FindingEvidence]:
    wanted_prints: set[str] = set()
    for name in req.checks:
        suite = config.behaviour_suite(name)
        if name == "clean_accuracy" or suite is not None:
            wanted_prints.add(fingerprint(model, None, name, None))
        for r in config.policy.robust:
            if name == metric_key("robust_accuracy", r.threat, r.budget):
                wanted_prints.add(fingerprint(model, r.threat, "robust_accuracy", r.budget))
    found = [
        f
        for f in state.values()
        if f.model == model and (f.threat in req.threats or f.fingerprint in wanted_prints)
    ]
    return [
        FindingEvidence(
            finding_id=f.finding_id,
            severity=f.severity,
            status=f.status_on(),
            title=f.title,
            taxonomy=f.taxonomy,
            files=[
                {"path": e.get("path"), "sha256": e.get("sha256"), "count": e.get("count")}
                for e in f.evidence
                if e.get("path")
            ],
            events=[int(h["seq"]) for h in f.history],
        )
        for f in sorted(found, key=lambda f: f.finding_id)
    ]


def _decisions(events: Sequence[Event], run: RunRecord | None) -> list[LedgerEvidence]:
    """The run itself, then the gate decisions on it and the validations and releases of its
    model file: who decided what on the evidence."""
    if run is None:
        return []
    out = []
    for event in events:
        p = event.payload
        if event.kind == RUN_COMPLETED and event.seq == run.seq:
            summary = f"scan run {run.run_id}: {p.get('n')} samples, seed {p.get('seed')}"
        elif event.kind == GATE_DECIDED and p.get("run_id") == run.run_id:
            summary = f"gate {p.get('status')} on run {run.run_id}"
        elif event.kind == VALIDATION_EVENT and p.get("candidate_sha256") == run.model_sha256:
            summary = f"validation {'passed' if p.get('passed') else 'failed'}"
        elif event.kind == RELEASE_EVENT and p.get("model_sha256") == run.model_sha256:
            summary = f"released {str(run.model_sha256)[:12]}"
        else:
            continue
        out.append(LedgerEvidence(event.seq, event.kind, event.event_id, event.ts, summary))
    return out


def compliance_report(
    config: HardenConfig, events: list[Event], head_hash: str, *, now: str | None = None
) -> ComplianceReport:
    """Each `[[requirements]]` entry with what the ledger holds for it (`events`, verified,
    ending in `head_hash`). Pure: reads and writes nothing."""
    model = config.model.name
    run = _latest_run(events, model)
    checks = _check_evidence(config, run, events)
    state = findings_state(events)
    decisions = _decisions(events, run)
    statuses = []
    for req in config.requirements:
        entry = requirement(req.id)
        statuses.append(
            RequirementStatus(
                id=req.id,
                section=entry.section,
                title=entry.title,
                summary=entry.summary,
                source=f"{entry.source_name}, {entry.source_version}",
                source_url=entry.source_url,
                rationale=req.rationale,
                checks=[
                    checks.get(name) or CheckEvidence(name, "not measured", None, None, None, None)
                    for name in req.checks
                ],
                threats=[_threat_evidence(t, run) for t in req.threats],
                findings=_findings_for(req, model, state, config),
                events=decisions if (req.checks or req.threats) else [],
            )
        )
    return ComplianceReport(
        project=config.project.name,
        model=model,
        catalogue_version=catalogue_version(),
        generated_at=now or datetime.now(UTC).isoformat(timespec="seconds"),
        ledger_events=len(events),
        ledger_head=head_hash,
        run_id=None if run is None else run.run_id,
        run_seq=None if run is None else run.seq,
        requirements=statuses,
    )


def _num(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"


def compliance_markdown(report: ComplianceReport) -> str:
    """The report as Markdown, one section per requirement."""
    run = (
        f"latest run {report.run_id} (ledger event #{report.run_seq})"
        if report.run_id
        else f"no scan of model {report.model} in the ledger"
    )
    lines = [
        f"# Compliance evidence: {report.project} / {report.model}",
        "",
        f"Generated {report.generated_at} by hardenml {__version__} from the ledger's "
        f"{report.ledger_events} events (head `{report.ledger_head}`); {run}. Requirement "
        f"catalogue {report.catalogue_version}: the summaries are hardenml's, the sources bind.",
        "",
    ]
    if not report.requirements:
        lines += ["No `[[requirements]]` are declared in hardenml.toml.", ""]
    for req in report.requirements:
        lines += [
            f"## {req.id}: {req.title}",
            "",
            f"{req.section} of {req.source} (<{req.source_url}>): {req.summary}",
            "",
        ]
        if req.rationale:
            lines += [f"Why these answer it: {req.rationale}", ""]
        if not req.has_evidence:
            lines += [f"**{NO_EVIDENCE}**: nothing in the ledger measures or tests this yet.", ""]
        lines.append("Checks:")
        if not req.checks:
            lines.append("- none mapped")
        for c in req.checks:
            if c.result == "not measured":
                lines.append(f"- `{c.name}`: {NO_EVIDENCE} (not measured by the latest run)")
            else:
                ci = "" if c.ci is None else f" (CI {_num(c.ci[0])}-{_num(c.ci[1])}, n={c.n})"
                lines.append(
                    f"- `{c.name}`: **{c.result}**, {_num(c.value)}{ci}, required "
                    f">= {_num(c.threshold)}"
                )
        lines.append("")
        lines.append("Threats:")
        if not req.threats:
            lines.append("- none mapped")
        for t in req.threats:
            if not t.measured:
                lines.append(f"- `{t.threat}`: {NO_EVIDENCE} (not measured by the latest run)")
            for m in t.measured:
                lines.append(
                    f"- `{t.threat}` {m['metric']} at budget {m['budget']:g}: "
                    f"{_num(m['value'])} (CI {_num(m['ci'][0])}-{_num(m['ci'][1])}, n={m['n']})"
                )
        lines.append("")
        lines.append("Findings:")
        if not req.findings:
            lines.append("- none recorded for these checks and threats")
        for f in req.findings:
            ids = ", ".join([*f.taxonomy.get("atlas", []), *f.taxonomy.get("owasp_ml", [])])
            lines.append(
                f"- {f.finding_id} [{f.severity}, {f.status}] {f.title}"
                + (f" ({ids})" if ids else "")
                + f"; ledger events {', '.join(f'#{s}' for s in f.events)}"
            )
            for file in f.files:
                lines.append(
                    f"  - evidence `{file['path']}` (sha256 {file['sha256']}, "
                    f"{file['count']} examples)"
                )
        lines.append("")
        lines.append("Ledger evidence:")
        if not req.events:
            lines.append(f"- {NO_EVIDENCE}")
        for e in req.events:
            lines.append(f"- #{e.seq} `{e.kind}` {e.ts} ({e.event_id}): {e.summary}")
        lines.append("")
    return "\n".join(lines)


def compliance_json(report: ComplianceReport) -> str:
    return json.dumps(json_safe(report.as_dict()), indent=2, allow_nan=False) + "\n"
