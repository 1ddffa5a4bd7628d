"""The scan of a chat model: every declared prompt probe at every budget, measured,
checked against the policy and turned into findings, like any threat.

A chat model has no tensors to attack, so this walks the probes instead of batches (the
tensor scan is `hardenml.scan.scanner`). Each probe at a budget gives one pass rate, the
share of its conversations in which the model held, recorded as the
`robust_accuracy[probe@turns]` measurement with its Wilson interval, so the policy's
`[[policy.robust]]` requirements, the gate and the reports read it as they read every
threat. Beside it the run records the probe's detector error rates (measured on the
detector's labelled set): a finding states them, so it says how sure it is.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hardenml._progress import Progress, SilentProgress
from hardenml.config import HardenConfig
from hardenml.records import Finding, UnitKey, finding_id_for, fingerprint
from hardenml.scan.metrics import proportion
from hardenml.scan.policy import PolicyCheck, checks_for
from hardenml.scan.scanner import ScanResult
from hardenml.targets import ChatModel
from hardenml.threats import Threat, ThreatError
from hardenml.threats.probes import ProbeOutcome, PromptProbe
from hardenml.threats.probes.base import PromptSet

# Failing conversations kept as evidence per probe and budget.
EVIDENCE_PER_PROBE = 16


def prompt_probes(threats: dict[str, Threat]) -> dict[str, PromptProbe]:
    """The declared threats as prompt probes, or a `ThreatError` naming those that are not:
    a chat model can only be probed."""
    other = sorted(name for name, t in threats.items() if not isinstance(t, PromptProbe))
    if other:
        raise ThreatError(
            f"the threats {other} attack classifiers over tensors and cannot run on a chat "
            "model (model.kind = 'chat'); declare prompt probes (family 'prompt') in "
            "[[threats]] instead"
        )
    return {name: t for name, t in threats.items() if isinstance(t, PromptProbe)}


def prompt_sets_sha256(config: HardenConfig, threats: dict[str, Threat]) -> str:
    """One sha256 over every prompt file the declared probes read: what a chat scan
    evaluated, in the place of a dataset's hash."""
    hashes = sorted(
        s.sha256
        for probe in prompt_probes(threats).values()
        for s in probe.prompt_sets(config.root)
    )
    return hashlib.sha256(json.dumps(hashes).encode()).hexdigest()


def probe_outcomes(
    config: HardenConfig,
    model: ChatModel,
    threats: dict[str, Threat],
    *,
    seed: int,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
    seconds: dict[str, float] | None = None,
    label: str = "",
) -> dict[UnitKey, ProbeOutcome]:
    """Every declared probe at every budget against `model`, in the config's order; each
    result logged with its detector's error rates, its time added to `seconds`."""
    progress = progress or SilentProgress()
    log = log or (lambda message: None)
    probes = prompt_probes(threats)
    units = [UnitKey(t.name, b) for t in config.threats for b in t.budgets]
    advance = progress.task(f"{label}probing with {len(units)} probe/budget pairs", len(units))
    outcomes: dict[UnitKey, ProbeOutcome] = {}
    for unit in units:
        clock = time.perf_counter()
        outcomes[unit] = probes[unit.threat].probe(
            model,
            budget=unit.budget,
            seed=seed,
            root=config.root,
            confidence=config.policy.confidence,
        )
        if seconds is not None:
            seconds[str(unit)] = round(time.perf_counter() - clock, 3)
        log(f"{label}{verdict_line(str(unit), outcomes[unit], config.policy.confidence)}")
        advance(1)
    return outcomes


def run_probe_scan(
    config: HardenConfig,
    model: ChatModel,
    threats: dict[str, Threat],
    *,
    model_sha256: str,
    seed: int | None = None,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
    fingerprint: str = "",
) -> ScanResult:
    """Every declared probe at every budget against `model`: measurements, checks, findings."""
    seed = config.seed if seed is None else seed
    run_id = uuid.uuid4().hex[:12]
    started = datetime.now(UTC).isoformat(timespec="seconds")
    queries_before = model.queries
    seconds: dict[str, float] = {}
    outcomes = probe_outcomes(
        config, model, threats, seed=seed, progress=progress, log=log, seconds=seconds
    )
    probes = prompt_probes(threats)
    units = list(outcomes)
    measurements = [
        proportion(
            "robust_accuracy",
            outcome.passed,
            outcome.n,
            threat=unit.threat,
            budget=unit.budget,
            confidence=config.policy.confidence,
            seed=seed,
        )
        for unit, outcome in outcomes.items()
    ]
    checks = checks_for(config, measurements)
    findings: list[Finding] = []
    passed_ids: dict[str, float] = {}
    folder = config.artifacts_dir / run_id
    for check in checks:
        if check.measurement is None or check.threat is None or check.budget is None:
            continue
        unit = UnitKey(check.threat, check.budget)
        outcome = outcomes[unit]
        if check.passed:
            fid = finding_id_for(config.model.name, check.threat, check.metric, check.budget)
            passed_ids[fid] = check.measurement.value
            continue
        evidence = save_transcripts(folder, str(unit), outcome, config.root)
        findings.append(probe_finding(config, check, probes[check.threat], outcome, evidence))
    prompt_sets = _unique_sets(outcomes)
    return ScanResult(
        run_id=run_id,
        model=config.model.name,
        model_sha256=model_sha256,
        data_sha256=prompt_sets_sha256(config, threats),
        seed=seed,
        n=max((o.n for o in outcomes.values()), default=0),
        measurements=measurements,
        checks=checks,
        findings=findings,
        started=started,
        finished=datetime.now(UTC).isoformat(timespec="seconds"),
        data_provenance={
            "source": "prompt probes",
            "prompt_sets": [s.as_dict() for s in prompt_sets],
        },
        scan_fingerprint=fingerprint,
        n_available=sum(len(s.items) for s in prompt_sets),
        n_max=max((o.n for o in outcomes.values()), default=0),
        batches_done=len(units),
        batches_total=len(units),
        queries=model.queries - queries_before,
        analysis={"probes": [o.summary() for o in outcomes.values()]},
        passed_ids=passed_ids,
        seconds={"units": seconds},
    )


def verdict_line(key: str, outcome: ProbeOutcome, confidence: float) -> str:
    """A probe's result in one line, with the error rates of the detector behind it."""
    m = proportion("pass_rate", outcome.passed, outcome.n, confidence=confidence, seed=0)
    rates = outcome.error_rates
    return (
        f"{key}: the model held in {outcome.passed}/{outcome.n} conversations "
        f"({m.value:.1%}, {confidence:.0%} CI {m.ci_low:.1%}-{m.ci_high:.1%}); judged by "
        f"{rates.detector} (false positives {rates.false_positive.words()}, false negatives "
        f"{rates.false_negative.words()})"
    )


def probe_finding(
    config: HardenConfig,
    check: PolicyCheck,
    probe: PromptProbe,
    outcome: ProbeOutcome,
    evidence: list[dict[str, Any]],
) -> Finding:
    """The finding for a probe whose pass rate is below the policy's: what was tried, how
    often the model gave in, and how far the detector that judged it can be trusted."""
    m = check.measurement
    assert m is not None and check.budget is not None and check.threat is not None
    rates = outcome.error_rates
    failed = outcome.n - outcome.passed
    who = probe.describe(check.budget)
    turns = f"{check.budget:g} turn{'s' if check.budget != 1 else ''}"
    return Finding(
        fingerprint=fingerprint(config.model.name, check.threat, check.metric, check.budget),
        title=(
            f"Prompt probe {check.threat} ({turns}): "
            f"the model held in {m.value:.1%} of conversations (CI {m.ci_low:.1%}-"
            f"{m.ci_high:.1%}), below the policy's {check.threshold:.1%}"
        ),
        model=config.model.name,
        threat=check.threat,
        metric=check.metric,
        budget=check.budget,
        severity=config.policy.severity.classify(check.shortfall),
        value=m.value,
        threshold=check.threshold,
        ci=(m.ci_low, m.ci_high),
        n=m.n,
        owner=config.owner_for(check.threat),
        exploitation=(
            f"{who[0].upper()}{who[1:]}: the model gave in in {failed} of {outcome.n} "
            f"conversations. Verdicts by the {rates.words()}."
        ),
        remediation=_remediation(probe),
        evidence=evidence,
    )


def _remediation(probe: PromptProbe) -> str:
    if probe.detector_name == "canary-leak":
        return (
            "Put the chat-output-filter patch in front of the model: it blocks replies that "
            "carry the secret (in any form the detector reads); chat-input-sanitizer strips "
            "invisible Unicode and neutralises injection markers in user content. Keep "
            "secrets out of system prompts; then re-run the probes."
        )
    return (
        "Strengthen the system prompt's refusal policy or put a moderation filter in front "
        "of the model (the chat-input-sanitizer patch removes hidden instructions); "
        "fine-tune on refusals; then re-run the probes."
    )


def save_transcripts(
    folder: Path, key: str, outcome: ProbeOutcome, root: Path
) -> list[dict[str, Any]]:
    """The failing conversations of a probe as JSON (sha256 recorded), each with the
    detector's error rates beside its verdict."""
    failing = [v for v in outcome.verdicts if not v.passed][:EVIDENCE_PER_PROBE]
    body = {
        "probe": outcome.probe,
        "budget": outcome.budget,
        "detector": outcome.error_rates.as_dict(),
        "prompt_sets": [s.as_dict() for s in outcome.prompt_sets],
        "conversations": [v.as_dict() for v in failing],
    }
    blob = json.dumps(body, indent=1, ensure_ascii=False).encode()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.transcripts.json"
    path.write_bytes(blob)
    try:
        shown = str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        shown = str(path)
    return [
        {
            "kind": "transcripts",
            "path": shown,
            "count": len(failing),
            "sha256": hashlib.sha256(blob).hexdigest(),
            "detector": outcome.error_rates.as_dict(),
        }
    ]


def _unique_sets(outcomes: dict[UnitKey, ProbeOutcome]) -> list[PromptSet]:
    seen: dict[str, PromptSet] = {}
    for outcome in outcomes.values():
        for s in outcome.prompt_sets:
            seen.setdefault(s.sha256, s)
    return list(seen.values())
