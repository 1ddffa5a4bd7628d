"""`hardenml intake SUBMISSION`: an external report re-run on the named model, judged
against the declared threat model, and recorded: acknowledgement, a credited finding with
the reproduction as evidence when it reproduces, and the outcome, each a ledger event.

A classifier takes `.npz` submissions (`hardenml.scan.intake`), a chat model JSON prompt
submissions (`hardenml.scan.prompt_intake`); each is refused, with the reason, by the
other kind of model."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hardenml.ledger import Event, findings_state
from hardenml.ledger.findings import due_date
from hardenml.records import (
    INTAKE_DECIDED,
    INTAKE_RECEIVED,
    Finding,
    IntakeDecided,
    IntakeReceived,
    fingerprint,
)
from hardenml.scan.intake import (
    IntakeVerdict,
    Submission,
    SubmissionError,
    check_submission,
    load_submission,
)
from hardenml.scan.metrics import proportion
from hardenml.scan.policy import generic_remedy_text, threat_taxonomy
from hardenml.scan.probes import save_transcripts
from hardenml.scan.prompt_intake import (
    PROMPT_SUFFIX,
    PromptIntakeVerdict,
    PromptSubmission,
    check_prompt_submission,
    load_prompt_submission,
)
from hardenml.targets import ChatModel, Target
from hardenml.threats import validate_threats
from hardenml.workflow import Workspace, chat_model

INTAKE_METRIC = "external_report"


@dataclass(frozen=True)
class IntakeResult:
    submission: Submission | PromptSubmission
    verdict: IntakeVerdict
    finding_id: str | None
    events: list[Event]
    # A prompt submission's replay: the probe, its transcripts and detector error rates.
    prompts: PromptIntakeVerdict | None = None


def _evidence(ws: Workspace, submission: Submission, verdict: IntakeVerdict) -> dict[str, object]:
    """The reproduction, stored beside the scan's evidence: the reproduced inputs, their
    originals, claimed labels and what the model predicted, addressed by sha256."""
    rows = [s.index for s in verdict.reproduced]
    assert submission.originals is not None  # a reproduced sample was measured against one
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        adversarial=submission.inputs[rows],
        original=submission.originals[rows],
        labels=submission.labels[rows],
        sample_index=np.asarray(rows),
        distance=np.asarray([s.distance for s in verdict.reproduced], dtype=np.float64),
    )
    data = buffer.getvalue()
    path = ws.config.artifacts_dir / "intake" / f"{submission.submission_id}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {
        "kind": "external_report",
        "path": str(path.relative_to(ws.config.root)),
        "sha256": hashlib.sha256(data).hexdigest(),
        "count": len(rows),
        "submission_sha256": submission.sha256,
    }


def _finding(ws: Workspace, submission: Submission, verdict: IntakeVerdict) -> Finding:
    config = ws.config
    reproduced = verdict.reproduced
    # The report is about the widest declared budget its reproduced samples need.
    widest = max(reproduced, key=lambda s: s.budget or 0.0)
    threat, budget = widest.threat, widest.budget
    assert threat is not None and budget is not None
    share = len(reproduced) / len(verdict.in_scope)
    return Finding(
        fingerprint=fingerprint(
            config.model.name, threat, INTAKE_METRIC, budget, submission.submission_id
        ),
        title=(
            f"External report {submission.submission_id} by {submission.submitter}: "
            f"{len(reproduced)} of {len(verdict.in_scope)} submitted inputs within {threat} "
            f"at budget {budget:g} fool the model"
        ),
        model=config.model.name,
        threat=threat,
        metric=INTAKE_METRIC,
        budget=budget,
        severity=config.intake.severity,
        value=1.0 - share,
        threshold=1.0,
        ci=(1.0 - share, 1.0 - share),
        n=len(verdict.in_scope),
        owner=config.owner_for(threat),
        exploitation=(
            f"An outside attacker ({submission.submitter}) crafted inputs inside the declared "
            f"threat model that the model misclassifies, although it gets their originals "
            f"right; the reproduction is stored as evidence."
        ),
        remediation=(
            f"{generic_remedy_text(budget)} Add the reproduced inputs to the evaluation set "
            "so the fix is checked against them."
        ),
        evidence=[_evidence(ws, submission, verdict)],
        slice=submission.submission_id,
        taxonomy=threat_taxonomy(config, [threat]),
    )


def _prompt_finding(
    ws: Workspace, submission: PromptSubmission, judged: PromptIntakeVerdict
) -> Finding:
    """The credited finding of reproduced conversations: the replayed transcripts as
    evidence, each with the detector's measured error rates beside its verdict."""
    config, verdict, outcome, probe = ws.config, judged.verdict, judged.outcome, judged.probe
    assert outcome is not None and probe is not None and judged.threat is not None
    reproduced, inside = verdict.reproduced, verdict.in_scope
    # About the widest declared budget (user turns) its reproduced conversations need.
    budget = max(s.budget or 0.0 for s in reproduced)
    held = proportion(
        INTAKE_METRIC,
        len(inside) - len(reproduced),
        len(inside),
        threat=judged.threat,
        budget=budget,
        confidence=config.policy.confidence,
        seed=config.seed,
    )
    folder = config.artifacts_dir / "intake"
    evidence = save_transcripts(folder, submission.submission_id, outcome, config.root)
    for item in evidence:
        item |= {"kind": "external_report", "submission_sha256": submission.sha256}
    rates = outcome.error_rates
    turns = f"{budget:g} turn{'s' if budget != 1 else ''}"
    return Finding(
        fingerprint=fingerprint(
            config.model.name, judged.threat, INTAKE_METRIC, budget, submission.submission_id
        ),
        title=(
            f"External report {submission.submission_id} by {submission.submitter}: "
            f"{len(reproduced)} of {len(inside)} submitted conversations within "
            f"{judged.threat} ({turns}) show {probe.behaviour}"
        ),
        model=config.model.name,
        threat=judged.threat,
        metric=INTAKE_METRIC,
        budget=budget,
        severity=config.intake.severity,
        value=held.value,
        threshold=1.0,
        ci=(held.ci_low, held.ci_high),
        n=len(inside),
        owner=config.owner_for(judged.threat),
        exploitation=(
            f"An outside attacker ({submission.submitter}) {probe.tactic}, in up to {turns} "
            f"of conversation: replayed on the model, {len(reproduced)} of {len(inside)} "
            f"conversations showed {probe.behaviour}. Verdicts by the {rates.words()}."
        ),
        remediation=(
            "Put the chat guards in front of the model (hardenml patch --with "
            "chat-output-filter or chat-input-sanitizer), validate them against these "
            "conversations (add the submission's conversations to the probe's `prompts`), "
            "then release the guarded model."
        ),
        evidence=evidence,
        slice=submission.submission_id,
        taxonomy=threat_taxonomy(config, [judged.threat]),
    )


def intake(
    ws: Workspace, path: Path, *, trust: bool = False, actor: str = "hardenml"
) -> IntakeResult:
    """Acknowledge, judge and record one submission (see `hardenml.scan.intake` and, for a
    chat model, `hardenml.scan.prompt_intake`)."""
    ws.ledger.check_writable()
    prompts = Path(path).suffix.lower() == PROMPT_SUFFIX
    if ws.is_chat != prompts:
        raise SubmissionError(
            f"submission {path}: a chat model (model.kind {ws.config.model.kind!r}) takes "
            "prompt submissions (.json, docs/intake.md)"
            if ws.is_chat
            else f"submission {path}: model.kind {ws.config.model.kind!r} takes .npz "
            "submissions of inputs; prompt submissions (.json) are for chat models"
        )
    # Loaded before the acknowledgement: a model that cannot be reached is a usage error
    # (exit 2), not a report received and never judged.
    submission: Submission | PromptSubmission
    model: ChatModel | None = None
    target: Target | None = None
    if prompts:
        submission = load_prompt_submission(path, ws.config)
        model = chat_model(ws, ws.model_file)
    else:
        submission = load_submission(path, ws.config)
        target = ws.load_target(trust=trust)
    threats = validate_threats(ws.config)
    received = ws.ledger.append(
        INTAKE_RECEIVED,
        IntakeReceived(
            submission_id=submission.submission_id,
            sha256=submission.sha256,
            submitter=submission.submitter,
            contact=submission.contact,
            file=submission.path.name,
            model=ws.config.model.name,
            model_sha256=ws.model_sha256(),
            claims=submission.claims(),
        ).to_payload(),
        actor=actor,
    )
    judged = None
    if isinstance(submission, PromptSubmission):
        assert model is not None
        judged = check_prompt_submission(submission, ws.config, model, threats, seed=ws.config.seed)
        verdict = judged.verdict
    else:
        assert target is not None
        verdict = check_submission(submission, ws.config, target, threats)
    events = [received]
    finding_id = None
    if verdict.outcome == "reproduced":
        if isinstance(submission, PromptSubmission):
            assert judged is not None
            finding = _prompt_finding(ws, submission, judged)
        else:
            finding = _finding(ws, submission, verdict)
        finding_id = finding.finding_id
        if finding_id not in findings_state(ws.ledger.events()):
            payload = {
                **finding.as_dict(),
                "run_id": submission.submission_id,
                "due": due_date(ws.config, finding.severity),
                "credit": {
                    "submitter": submission.submitter,
                    "contact": submission.contact,
                    "submission_id": submission.submission_id,
                },
            }
            events.append(ws.ledger.append("finding.opened", payload, actor=actor))
    decided = IntakeDecided(
        submission_id=submission.submission_id,
        outcome=verdict.outcome,  # type: ignore[arg-type]
        samples=len(verdict.samples),
        in_scope=len(verdict.in_scope),
        reproduced=len(verdict.reproduced),
        reasons=verdict.reasons(),
        finding_id=finding_id,
        credit=submission.submitter,
    )
    events.append(ws.ledger.append(INTAKE_DECIDED, decided.to_payload(), actor=actor))
    return IntakeResult(submission, verdict, finding_id, events, judged)
