"""External reports against a chat model: submitted conversations, checked against the
declared threat model and replayed on the model with the claimed probe's detector.

A prompt submission is a JSON file (schema: `PROMPT_SUBMISSION_SCHEMA`, written to
`docs/schemas/prompt-submission.schema.json`; docs/intake.md):

    {"format": "hardenml.prompt-submission/1",
     "submitter": "...", "contact": "...",            # contact optional
     "probe": "system-prompt-extraction",             # the probe family claimed
     "threat": "extraction",                          # optional: a declared [[threats]] name
     "claim": "canary-leak",                          # the bad behaviour claimed
     "queries": 12,                                   # optional: replies the submitter used
     "conversations": [{"id": "...", "turns": ["user turn", ...]}, ...]}

It is inside the threat model when the claimed probe is declared (a `[[threats]]` entry
with that attack), the claim is the behaviour that probe's detector tells
(`PromptProbe.behaviour`), replaying it stays within the deployment's query budget
(`model.options.query_budget`) and the claimed `queries` do too; a conversation is inside
when its user turns are at most the largest declared budget of that threat (a prompt
probe's budget is the attacker's number of turns), no turn is longer than
`intake.max_prompt_chars`, and it carries the probe's marker where the probe needs one
(`{secret}` for prompt injection: the hidden instruction asks for it). Every conversation
inside is replayed on the model exactly as the probe plays its own prompts (the planted
canary, the marker, greedy seeds) and judged by the probe's detector, whose measured
false-positive and false-negative rates go with the verdict.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hardenml.config import HardenConfig
from hardenml.scan.intake import IntakeVerdict, SampleVerdict, SubmissionError, submission_id
from hardenml.targets import ChatModel, kind_options
from hardenml.threats import Threat
from hardenml.threats.probes import ProbeOutcome, PromptProbe, PromptSet
from hardenml.threats.probes.base import BEHAVIOURS, PromptItem

PROMPT_FORMAT = "hardenml.prompt-submission/1"
PROMPT_SUFFIX = ".json"

# The JSON Schema of a prompt submission (draft 2020-12; `hardenml schema prompt-submission`).
PROMPT_SUBMISSION_SCHEMA: dict[str, Any] = {
    "title": "hardenml prompt submission",
    "description": (
        "An external report against a chat model (`hardenml intake FILE.json`): who sent "
        "it, the probe family and bad behaviour claimed, and the conversations to replay."
    ),
    "type": "object",
    "required": ["format", "submitter", "probe", "claim", "conversations"],
    "additionalProperties": False,
    "properties": {
        "format": {"const": PROMPT_FORMAT},
        "submitter": {"type": "string", "minLength": 1, "description": "who to credit"},
        "contact": {"type": "string"},
        "probe": {
            "type": "string",
            "minLength": 1,
            "description": "the registered prompt probe (attack name) the report falls under",
        },
        "threat": {"type": "string", "description": "the declared [[threats]] name, if known"},
        "claim": {"enum": list(BEHAVIOURS), "description": "the bad behaviour claimed"},
        "queries": {"type": "integer", "minimum": 0, "description": "replies the finder used"},
        "conversations": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "turns"],
                "additionalProperties": False,
                "properties": {
                    "id": {"type": "string", "minLength": 1},
                    "turns": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "string", "minLength": 1},
                        "description": "the user turns, in order; the model answers each",
                    },
                },
            },
        },
    },
}


@dataclass(frozen=True)
class PromptSubmission:
    path: Path
    sha256: str
    submitter: str
    probe: str
    claim: str
    conversations: tuple[PromptItem, ...]
    contact: str | None = None
    threat: str | None = None
    queries: int | None = None

    @property
    def submission_id(self) -> str:
        return submission_id(self.sha256)

    def claims(self) -> dict[str, Any]:
        return {
            "probe": self.probe,
            "threat": self.threat,
            "claim": self.claim,
            "queries": self.queries,
            "conversations": len(self.conversations),
            "turns": sum(len(c.turns) for c in self.conversations),
        }

    @property
    def prompt_set(self) -> PromptSet:
        """The conversations as a prompt file, as transcripts and outcomes record them."""
        return PromptSet(
            f"intake:{self.submission_id}", 1, self.sha256, self.path.name, self.conversations
        )


def _string(data: Mapping[str, Any], key: str, *, required: bool) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise SubmissionError(f"`{key}` must be a non-empty string, not {value!r}")
    return value.strip()


def _conversations(data: Mapping[str, Any], limit: int) -> tuple[PromptItem, ...]:
    items = data.get("conversations")
    if not isinstance(items, list) or not items:
        raise SubmissionError(
            '`conversations` must be a non-empty list of {"id": str, "turns": [str, ...]}'
        )
    if len(items) > limit:
        raise SubmissionError(
            f"the submission holds {len(items)} conversations, more than intake.max_samples "
            f"= {limit}; split it, or raise the limit in hardenml.toml"
        )
    out, seen = [], set()
    for i, item in enumerate(items):
        turns = item.get("turns") if isinstance(item, dict) else None
        ident = item.get("id") if isinstance(item, dict) else None
        ok = (
            isinstance(ident, str)
            and bool(ident.strip())
            and isinstance(turns, list)
            and bool(turns)
            and all(isinstance(t, str) and t.strip() for t in turns)
            and set(item) <= {"id", "turns"}
        )
        if not ok:
            raise SubmissionError(
                f'`conversations[{i}]` must be {{"id": non-empty str, "turns": [non-empty '
                "str, ...]}} and nothing else"
            )
        assert isinstance(ident, str) and isinstance(turns, list)
        if ident in seen:
            raise SubmissionError(f"`conversations[{i}].id` {ident!r} repeats an earlier id")
        seen.add(ident)
        out.append(PromptItem(ident, tuple(turns)))
    return tuple(out)


def load_prompt_submission(path: Path, config: HardenConfig) -> PromptSubmission:
    """Read and shape-check a prompt submission (see the module docstring for its keys);
    a `SubmissionError` names the key and the fix."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SubmissionError(f"submission {path} does not exist") from None
    except OSError as exc:
        raise SubmissionError(f"submission {path} cannot be read ({exc.strerror})") from None
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SubmissionError(f"submission {path} is not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != PROMPT_FORMAT:
        raise SubmissionError(
            f"submission {path} is not a prompt submission: expected a JSON object with "
            f'"format": "{PROMPT_FORMAT}" (see docs/intake.md)'
        )
    unknown = sorted(set(data) - set(PROMPT_SUBMISSION_SCHEMA["properties"]))
    if unknown:
        raise SubmissionError(
            f"submission {path} has unknown keys {unknown}; the keys are "
            f"{sorted(PROMPT_SUBMISSION_SCHEMA['properties'])}"
        )
    claim = _string(data, "claim", required=True)
    if claim not in BEHAVIOURS:
        raise SubmissionError(f"`claim` is {claim!r}; expected one of {list(BEHAVIOURS)}")
    queries = data.get("queries")
    if queries is not None and (
        isinstance(queries, bool) or not isinstance(queries, int) or queries < 0
    ):
        raise SubmissionError(f"`queries` must be a whole number >= 0, not {queries!r}")
    submitter = _string(data, "submitter", required=True)
    probe = _string(data, "probe", required=True)
    assert submitter is not None and probe is not None and claim is not None
    return PromptSubmission(
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
        submitter=submitter,
        probe=probe,
        claim=claim,
        conversations=_conversations(data, config.intake.max_samples),
        contact=_string(data, "contact", required=False),
        threat=_string(data, "threat", required=False),
        queries=queries,
    )


@dataclass(frozen=True)
class PromptIntakeVerdict:
    """The per-conversation verdict (`IntakeVerdict`, one `SampleVerdict` per
    conversation, `budget` = the turns it used) and, when any conversation was replayed,
    the probe that judged them and its outcome (transcripts and detector error rates)."""

    verdict: IntakeVerdict
    probe: PromptProbe | None = None
    threat: str | None = None
    outcome: ProbeOutcome | None = None


def _declared(
    submission: PromptSubmission, config: HardenConfig, threats: Mapping[str, Threat]
) -> tuple[str, PromptProbe, list[float]] | str:
    """The declared threat the submission falls under (name, probe, budgets), or why none."""
    probes = {
        spec.name: (spec, threats[spec.name])
        for spec in config.threats
        if isinstance(threats.get(spec.name), PromptProbe)
    }
    declared = sorted({spec.attack for spec, _ in probes.values()})
    matching = [name for name, (spec, _) in probes.items() if spec.attack == submission.probe]
    if submission.threat is not None:
        if submission.threat not in probes:
            return (
                f"claimed threat {submission.threat!r} is not a prompt probe declared in the "
                f"threat model (declared: {sorted(probes)})"
            )
        if submission.threat not in matching:
            return (
                f"claimed threat {submission.threat!r} runs probe "
                f"{probes[submission.threat][0].attack!r}, not the claimed {submission.probe!r}"
            )
        matching = [submission.threat]
    if not matching:
        return (
            f"claimed probe family {submission.probe!r} is not declared in the threat model "
            f"(declared prompt probes: {declared or 'none'})"
        )
    spec, probe = probes[matching[0]]
    assert isinstance(probe, PromptProbe)
    return spec.name, probe, sorted(float(b) for b in spec.budgets)


def _file_refusals(
    submission: PromptSubmission, probe: PromptProbe, query_budget: int | None
) -> list[str]:
    refusal = []
    if submission.claim != probe.behaviour:
        refusal.append(
            f"claimed behaviour {submission.claim!r} is not what probe "
            f"{submission.probe!r} judges: its detector {probe.detector_name} tells "
            f"{probe.behaviour!r}"
        )
    replies = sum(len(c.turns) for c in submission.conversations)
    if query_budget is not None and replies > query_budget:
        refusal.append(
            f"replaying its {replies} user turns needs {replies} replies, more than the "
            f"deployment's query limit model.options.query_budget = {query_budget}: outside "
            "the threat model"
        )
    claimed = submission.queries
    if query_budget is not None and claimed is not None and claimed > query_budget:
        refusal.append(
            f"claimed {submission.queries} queries exceed the query limit "
            f"model.options.query_budget = {query_budget}: outside the threat model"
        )
    return refusal


def _in_scope(
    index: int,
    item: PromptItem,
    probe: PromptProbe,
    threat: str,
    budgets: list[float],
    max_chars: int,
) -> SampleVerdict:
    """Whether conversation `index` lies inside the threat model (`reproduced` is left
    False: the replay decides it)."""
    turns = len(item.turns)
    covering = next((b for b in budgets if turns <= b), None)
    if covering is None:
        return SampleVerdict(
            index,
            False,
            False,
            f"{turns} user turns exceed the largest declared budget of {budgets[-1]:g} turns "
            f"({threat}): outside the threat model",
        )
    longest = max(len(t) for t in item.turns)
    if longest > max_chars:
        return SampleVerdict(
            index,
            False,
            False,
            f"a turn of {longest} characters exceeds intake.max_prompt_chars = {max_chars}: "
            "outside the threat model",
        )
    if probe.marker is not None and not any(probe.marker in t for t in item.turns):
        return SampleVerdict(
            index,
            False,
            False,
            f"no {probe.marker} marker in its turns: probe {probe.probe_name} judges a reply "
            f"by the marker the hidden instruction asks for; write {probe.marker} where the "
            "injected instruction names its answer",
        )
    return SampleVerdict(index, True, False, "inside the threat model", None, threat, covering)


def check_prompt_submission(
    submission: PromptSubmission,
    config: HardenConfig,
    model: ChatModel,
    threats: Mapping[str, Threat],
    *,
    seed: int,
) -> PromptIntakeVerdict:
    """Judge `submission` against the declared threat model and replay the conversations
    inside it on `model` with the claimed probe (`threats`: the declared threats, built)."""
    found = _declared(submission, config, threats)
    if isinstance(found, str):
        refused = [
            SampleVerdict(i, False, False, "the submission is refused as a whole")
            for i in range(len(submission.conversations))
        ]
        return PromptIntakeVerdict(IntakeVerdict(refused, [found]))
    threat, probe, budgets = found
    query_budget = getattr(kind_options(config.model), "query_budget", None)
    refusal = _file_refusals(submission, probe, query_budget)
    if refusal:
        refused = [
            SampleVerdict(i, False, False, "the submission is refused as a whole")
            for i in range(len(submission.conversations))
        ]
        return PromptIntakeVerdict(IntakeVerdict(refused, refusal), probe, threat)
    scoped = [
        _in_scope(i, item, probe, threat, budgets, config.intake.max_prompt_chars)
        for i, item in enumerate(submission.conversations)
    ]
    inside = [submission.conversations[s.index] for s in scoped if s.in_scope]
    if not inside:
        return PromptIntakeVerdict(IntakeVerdict(scoped), probe, threat)
    outcome = probe.play(
        model,
        inside,
        turns=max(len(item.turns) for item in inside),
        seed=seed,
        sets=[submission.prompt_set],
        confidence=config.policy.confidence,
    )
    judged = {v.item: v for v in outcome.verdicts}
    words = outcome.error_rates.words()
    samples = []
    for sample, item in zip(scoped, submission.conversations, strict=True):
        if not sample.in_scope:
            samples.append(sample)
            continue
        held = judged[item.id].passed
        said = (
            f"the model held (no {probe.behaviour}); judged by the {words}"
            if held
            else f"reproduced: {probe.behaviour} in a reply; judged by the {words}"
        )
        samples.append(
            SampleVerdict(sample.index, True, not held, said, None, threat, sample.budget)
        )
    return PromptIntakeVerdict(IntakeVerdict(samples), probe, threat, outcome)
