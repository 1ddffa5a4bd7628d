"""The records that cross rooms: the ground floor (imports nothing of hardenml).

A threat at a budget (`UnitKey`), a number the scan measured (`Measurement`) and a
vulnerability (`Finding`) flow from the scan to the ledger, the gate, the reports and the
monitor as these types, so that no room formats or parses another room's keys.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Literal, NamedTuple, Self, cast

Severity = Literal["critical", "high", "medium", "low"]
SEVERITIES: tuple[Severity, ...] = ("critical", "high", "medium", "low")


class UnitKey(NamedTuple):
    """One threat at one budget: the unit a scan measures and a policy requirement names.

    Written `threat@budget` (the budget in `%g` form) in measurement keys, outcome arrays
    and reports; `str()` and `parse` are the only places that spell it.
    """

    threat: str
    budget: float

    def __str__(self) -> str:
        return f"{self.threat}@{self.budget:g}"

    @classmethod
    def parse(cls, text: str) -> UnitKey:
        """The unit written by `str()`; the threat name may itself contain no `@`."""
        threat, sep, budget = text.rpartition("@")
        if not sep or not threat:
            raise ValueError(f"not a threat@budget key: {text!r}")
        return cls(threat, float(budget))


class ThreatModel(NamedTuple):
    """A set of perturbations an attacker may choose from: the space a budget is measured
    in (a norm, "linf" or "l2"; or what a threat names for its own kind of set) and the
    budget. Every threat a scan runs with the same `ThreatModel` attacks the same set, so
    a sample is robust to it only if every one of those attacks failed on it.

    Written `space@budget` (`linf@0.1`), like `UnitKey`; the worst case over its attacks
    is the measurement `robust_accuracy_worst[linf@0.1]`.
    """

    space: str
    budget: float

    def __str__(self) -> str:
        return f"{self.space}@{self.budget:g}"


# The per-sample worst case over every attack a scan ran in one threat model: its own metric,
# so that the per-attack `robust_accuracy` numbers stay as they were measured.
WORST_CASE_METRIC = "robust_accuracy_worst"


# Metrics where a smaller value is the better model (calibration errors); every other
# measured metric (accuracies, pass rates, margins) is better when larger.
LOWER_IS_BETTER = frozenset({"ece", "brier"})


def metric_key(metric: str, threat: str | None = None, budget: float | None = None) -> str:
    """The key of a metric, per unit where it has one: `robust_accuracy[pgd@0.1]`."""
    if threat is None:
        return metric
    if budget is None:
        return f"{metric}[{threat}]"
    return f"{metric}[{UnitKey(threat, budget)}]"


@dataclass(frozen=True)
class Measurement:
    """One number the scan measured, with how sure we are of it: `value` over `n` samples,
    its interval at `confidence`, and the seed that reproduces it. `threat` names the
    threat, except for `WORST_CASE_METRIC`, where it is the threat model's space
    (`ThreatModel.space`, e.g. "linf") and `budget` its budget."""

    metric: str
    threat: str | None
    budget: float | None
    value: float
    ci_low: float
    ci_high: float
    confidence: float
    n: int
    seed: int

    @property
    def key(self) -> str:
        return metric_key(self.metric, self.threat, self.budget)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        return cls(**data)


def fingerprint(
    model: str, threat: str | None, metric: str, budget: float | None, slice_: str | None = None
) -> str:
    """Stable identity of a vulnerability: the same one seen in two runs is one finding."""
    key = "|".join(
        [model, threat or "-", metric, "-" if budget is None else f"{budget:g}", slice_ or "-"]
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def finding_id_for(
    model: str, threat: str | None, metric: str, budget: float | None, slice_: str | None = None
) -> str:
    """The short id users type (`HML-` and 8 hex digits of the fingerprint)."""
    return f"HML-{fingerprint(model, threat, metric, budget, slice_)[:8]}"


@dataclass(frozen=True)
class Finding:
    """A vulnerability as a scan saw it: what failed, how badly, how an attacker uses it and
    how to fix it. The ledger folds these (plus reviews) into `FindingState`."""

    fingerprint: str
    title: str
    model: str
    threat: str | None
    metric: str
    budget: float | None
    severity: Severity
    value: float
    threshold: float
    ci: tuple[float, float]
    n: int
    owner: str
    exploitation: str
    remediation: str
    evidence: list[dict[str, Any]] = field(default_factory=list)
    slice: str | None = None
    # The short id users type; derived from the fingerprint unless the ledger names it.
    finding_id: str = ""

    # The attack taxonomies the threat maps to (threats/taxonomy.json): {"atlas": [ids],
    # "owasp_ml": [ids], "mapping_version": ...}; empty for a finding about no threat.
    taxonomy: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.finding_id:
            object.__setattr__(self, "finding_id", f"HML-{self.fingerprint[:8]}")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ci"] = list(self.ci)
        return data


# Ledger event kinds that cross rooms; their payloads are the typed records below.
RUN_COMPLETED = "run.completed"
GATE_DECIDED = "gate.decided"
MODEL_PATCHED = "model.patched"
MODEL_RELEASED = "model.released"
REPLAY_UPDATED = "replay.updated"


class _FlatPayload:
    """A payload that is exactly its dataclass's fields: written with `asdict`, read back
    by name (an optional field a writer left out takes its default)."""

    def to_payload(self) -> dict[str, Any]:
        return asdict(cast(Any, self))

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Self:
        names = [f.name for f in fields(cast(Any, cls))]
        return cls(**{k: payload[k] for k in names if k in payload})


class _OpenPayload:
    """A payload with named fields plus `extra`: keys a writer added beyond the fields
    travel in `extra` unchanged and are written back flat beside them."""

    def to_payload(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(cast(Any, self)).items() if k != "extra"}
        return {**data, **cast(Any, self).extra}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Self:
        known = {f.name for f in fields(cast(Any, cls))} - {"extra"}
        built: Self = cast(Any, cls)(
            **{k: payload[k] for k in known},
            extra={k: v for k, v in payload.items() if k not in known},
        )
        return built


@dataclass(frozen=True)
class RunCompleted:
    """The payload of a `run.completed` event: what a scan measured, on which model and
    data. Keys the scan adds beyond these (analysis, calibration, slices, the config
    snapshot) travel in `extra` unchanged, so old and new ledgers read alike."""

    run_id: str
    model: str
    model_sha256: str
    data_sha256: str
    seed: int
    n: int
    measurements: list[Measurement]
    scan: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    _FIELDS: ClassVar[tuple[str, ...]] = (
        "run_id",
        "model",
        "model_sha256",
        "data_sha256",
        "seed",
        "n",
        "measurements",
        "scan",
    )

    def to_payload(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "model": self.model,
            "model_sha256": self.model_sha256,
            "data_sha256": self.data_sha256,
            "seed": self.seed,
            "n": self.n,
            "measurements": [m.as_dict() for m in self.measurements],
            "scan": dict(self.scan),
            **self.extra,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> RunCompleted:
        return cls(
            run_id=str(payload.get("run_id", "")),
            model=str(payload.get("model", "")),
            model_sha256=str(payload.get("model_sha256", "")),
            data_sha256=str(payload.get("data_sha256", "")),
            seed=int(payload.get("seed", 0)),
            n=int(payload.get("n", 0)),
            measurements=[Measurement.from_dict(m) for m in payload.get("measurements", [])],
            scan=dict(payload.get("scan") or {}),
            extra={k: v for k, v in payload.items() if k not in cls._FIELDS},
        )


@dataclass(frozen=True)
class GateDecided(_OpenPayload):
    """The payload of a `gate.decided` event: the verdict on one run and why."""

    run_id: str
    model: str
    model_sha256: str
    status: Literal["pass", "fail"]
    exit_code: int
    reasons: list[str]
    checks: list[dict[str, Any]]
    blocking_findings: list[str]
    extra_checks: list[dict[str, Any]]
    report: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelPatched(_OpenPayload):
    """The payload of a `model.patched` event: which patch made which artifact from which
    parent, and how to load it (`model`: kind, factory, factory_kwargs, path). What the
    patch reports beyond these (metrics, history, its own events, timings, provenance)
    travels in `extra` unchanged."""

    patch: str
    params: dict[str, Any]
    seed: int
    model: dict[str, Any]
    model_name: str
    artifact: str
    artifact_sha256: str
    parent: str
    parent_sha256: str
    data_sha256: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelReleased:
    """The payload of a `model.released` event: the file released, the gate decision and
    run behind it (absent when forced without one), its lineage and the policy it was gated
    under, so that a later gate can tell a regression or a loosened policy.
    `ledger_seq` is the event's position, filled in by readers, not stored."""

    model: str
    model_sha256: str
    path: str
    gate_seq: int | None
    forced: bool
    run_id: str | None = None
    data_sha256: str | None = None
    measurements: list[dict[str, Any]] = field(default_factory=list)
    parent_sha256: str | None = None
    patch: str | None = None
    policy: dict[str, Any] | None = None
    # A chat model's release: what `model_sha256` hashes, spelled out (the endpoint's
    # identity and served model, the guard file's sha256 and its guards); None otherwise.
    chat: dict[str, Any] | None = None
    ledger_seq: int = 0

    def to_payload(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "ledger_seq"}

    @classmethod
    def from_payload(cls, payload: dict[str, Any], *, seq: int = 0) -> ModelReleased:
        known = set(cls.__dataclass_fields__) - {"ledger_seq"}
        return cls(**{k: v for k, v in payload.items() if k in known}, ledger_seq=seq)


ALERT_RAISED = "alert.raised"
ALERT_RESOLVED = "alert.resolved"


@dataclass(frozen=True)
class AlertRaised(_FlatPayload):
    """The payload of an `alert.raised` event: a monitor rule's condition lasted long enough
    to raise an alert. `statistic`, `p_value`, `n` and `detail` are the detector's reading
    that raised it; `at` is seconds since the epoch."""

    alert_id: str
    rule: str
    detector: str
    feature: str | None
    severity: Severity
    owner: str
    statistic: float
    p_value: float | None
    n: int
    detail: str
    at: float


@dataclass(frozen=True)
class AlertResolved(_FlatPayload):
    """The payload of an `alert.resolved` event: the condition of alert `alert_id` (raised
    at `raised_at`) has cleared; the reading is the one that closed it."""

    alert_id: str
    rule: str
    detector: str
    feature: str | None
    statistic: float
    p_value: float | None
    n: int
    detail: str
    at: float
    raised_at: float


TRAFFIC_SWITCHED = "monitor.traffic_switched"


@dataclass(frozen=True)
class TrafficSwitched:
    """The payload of a `monitor.traffic_switched` event: the live service moved traffic
    between model versions (a blue/green switch, or a rollback to the released model).
    `before` and `after` map each model version to its share of the requests."""

    model: str
    before: dict[str, float]
    after: dict[str, float]
    reason: str
    rollback: bool

    def to_payload(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> TrafficSwitched:
        return cls(
            model=str(payload["model"]),
            before={str(k): float(v) for k, v in payload["before"].items()},
            after={str(k): float(v) for k, v in payload["after"].items()},
            reason=str(payload.get("reason", "")),
            rollback=bool(payload.get("rollback", False)),
        )


INTAKE_RECEIVED = "intake.received"
INTAKE_DECIDED = "intake.decided"


@dataclass(frozen=True)
class IntakeReceived(_FlatPayload):
    """The payload of an `intake.received` event: the acknowledgement of an external report
    (bug bounty, outside red team), before anything is judged."""

    submission_id: str
    sha256: str
    submitter: str
    contact: str | None
    file: str
    model: str
    model_sha256: str
    claims: dict[str, Any]


@dataclass(frozen=True)
class IntakeDecided(_FlatPayload):
    """The payload of an `intake.decided` event: the outcome of an external report.
    `outcome` is "reproduced" (a credited finding, `finding_id`, holds the reproduction),
    "not-reproduced" (inside the threat model, but the model withstood it) or "refused"
    (outside the threat model; `reasons` say why)."""

    submission_id: str
    outcome: Literal["reproduced", "not-reproduced", "refused"]
    samples: int
    in_scope: int
    reproduced: int
    reasons: list[str]
    finding_id: str | None
    credit: str


INCIDENT_OPENED = "incident.opened"
INCIDENT_UPDATED = "incident.updated"
INCIDENT_CLOSED = "incident.closed"
# The finding families an incident runbook exists for (templates/runbooks/FAMILY.md).
IncidentFamily = Literal["drift", "attack-campaign", "jailbreak", "regression"]
INCIDENT_FAMILIES: tuple[IncidentFamily, ...] = (
    "drift",
    "attack-campaign",
    "jailbreak",
    "regression",
)
IncidentStatus = Literal["investigating", "mitigated", "monitoring"]


@dataclass(frozen=True)
class IncidentOpened(_FlatPayload):
    """The payload of an `incident.opened` event. `findings` are finding ids; `alerts` are
    monitor alert ids, kept as the monitor spells them."""

    incident_id: str
    title: str
    family: IncidentFamily
    severity: Severity
    findings: list[str]
    alerts: list[str]
    summary: str


@dataclass(frozen=True)
class IncidentUpdated(_FlatPayload):
    """The payload of an `incident.updated` event: a note, links added, a status change."""

    incident_id: str
    note: str
    findings: list[str] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    status: IncidentStatus | None = None


@dataclass(frozen=True)
class IncidentClosed(_FlatPayload):
    """The payload of an `incident.closed` event: how it ended."""

    incident_id: str
    resolution: str


@dataclass(frozen=True)
class ReplayUpdated(_FlatPayload):
    """The payload of a `replay.updated` event: one version of the replay buffer
    (`hardenml.continuous.replay`), a content-addressed .npz, and what went into it.

    `version` counts from 1; `parent_sha256` is the version it grew from (None for the
    first). `offered` and `kept` count the rows this update brought and how many of them
    the reservoir kept; `sources` counts the buffer's rows by source tag; `ingested` lists
    the sha256 of every evidence file taken in so far (so none is taken twice)."""

    version: int
    path: str
    sha256: str
    parent_sha256: str | None
    capacity: int
    size: int
    offered: int
    kept: int
    sources: dict[str, int]
    seed: int
    half_life_days: float
    ingested: list[str] = field(default_factory=list)


REDTEAM_COMPLETED = "redteam.completed"


@dataclass(frozen=True)
class RedteamCompleted(_FlatPayload):
    """The payload of a `redteam.completed` event: one `hardenml redteam` run
    (`hardenml.continuous.redteam`). `units` lists what was measured, one entry per attack
    and budget (its drawn parameters, value, interval, n, the requirement that judged it);
    `not_covered` the attack@budget pairs the time budget left out; `skipped` why a
    registered threat did not run; `new_findings` the finding ids this run opened or
    reopened, `known_findings` those it saw that the ledger already held."""

    run_id: str
    model: str
    model_sha256: str
    data_sha256: str
    seed: int
    n: int
    effort: float
    trials: int
    stop_reason: Literal["complete", "time budget"]
    seconds: float
    time_budget_s: float | None
    units: list[dict[str, Any]]
    not_covered: list[str]
    skipped: dict[str, str]
    new_findings: list[str]
    known_findings: list[str]
