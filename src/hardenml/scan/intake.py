"""External reports (bug bounty, outside red teams): is a submission inside the declared
threat model, and does it reproduce on the named model?

A submission is an `.npz` file, read without pickle (`np.load(allow_pickle=False)`):

- `inputs` (N, *model.input.shape): the adversarial inputs, in the model's raw input space;
- `labels` (N,): the class each input truly is (its claimed label);
- `originals` (N, *shape), optional: the clean inputs they were made from;
- `submitter` (string), required; `contact`, `threat`, `norm` ("linf" or "l2"), `budget`
  (the budget the submitter claims) and `queries` (model queries spent per sample),
  optional.

A sample is inside the threat model when it lies within `model.input.bounds`, its distance
to its original (in the submission's norm, or any declared one) is at most the largest
budget a declared threat of that norm allows (and at most the claimed budget, when one is
given), and the queries it claims are within the declared query-limited threats' limits.
Without originals no distance can be measured, so no budget can be checked: such a
submission is refused and asked for its originals. A sample reproduces when the model gets
its original right and its input wrong: an input the model already misclassified clean is
no attack.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hardenml.config import HardenConfig
from hardenml.data import DataError, read_npz
from hardenml.targets import Target
from hardenml.threats import Threat
from hardenml.threats.base import perturbation_size

NORMS = ("linf", "l2")
# Distances are compared in float32, as the model sees the inputs; a sample exactly at the
# budget must not fail by rounding.
TOLERANCE = 1e-5
# Norm -> (budget, threat name) of every declared norm-ball threat, smallest budget first.
Budgets = Mapping[str, list[tuple[float, str]]]


def submission_id(sha256: str) -> str:
    """What names a submission in the ledger, from its file's sha256: the same file is the
    same submission."""
    return f"EXT-{sha256[:10]}"


class SubmissionError(ValueError):
    """A submission file that cannot be read as one; the message names the key and the fix."""


@dataclass(frozen=True)
class Submission:
    path: Path
    sha256: str
    inputs: np.ndarray
    labels: np.ndarray
    originals: np.ndarray | None
    submitter: str
    contact: str | None = None
    threat: str | None = None
    norm: str | None = None
    budget: float | None = None
    queries: int | None = None

    @property
    def submission_id(self) -> str:
        return submission_id(self.sha256)

    def claims(self) -> dict[str, Any]:
        return {
            "threat": self.threat,
            "norm": self.norm,
            "budget": self.budget,
            "queries": self.queries,
            "samples": len(self.labels),
            "originals": self.originals is not None,
        }


def _text(data: Mapping[str, np.ndarray], key: str) -> str | None:
    if key not in data:
        return None
    value = data[key]
    if value.shape != () or value.dtype.kind not in "US":
        raise SubmissionError(
            f"`{key}` must be a single string (np.array('...')), not {value.dtype}"
        )
    return str(value.item()).strip() or None


def _number(data: Mapping[str, np.ndarray], key: str, kind: type) -> Any:
    if key not in data:
        return None
    value = data[key]
    if value.shape != () or value.dtype.kind not in "iuf":
        raise SubmissionError(f"`{key}` must be a single number, not an array of {value.dtype}")
    number = kind(value.item())
    if not np.isfinite(number) or number < 0:
        raise SubmissionError(f"`{key}` must be a finite number >= 0, not {number}")
    return number


def load_submission(path: Path, config: HardenConfig) -> Submission:
    """Read and shape-check a submission (see the module docstring for its keys)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = read_npz(raw, f"submission {path}")
    except FileNotFoundError:
        raise SubmissionError(f"submission {path} does not exist") from None
    except OSError as exc:
        raise SubmissionError(f"submission {path} cannot be read: {exc.strerror or exc}") from None
    except DataError as exc:
        raise SubmissionError(
            f"{exc}; write it with numpy.savez(path, inputs=..., labels=..., submitter=...)"
        ) from None
    missing = [key for key in ("inputs", "labels", "submitter") if key not in data]
    if missing:
        raise SubmissionError(
            f"submission {path} lacks {missing}: it needs `inputs`, `labels` and `submitter` "
            "(and `originals` for a budget to be checked)"
        )
    shape = tuple(config.model.input.shape)
    inputs = np.asarray(data["inputs"])
    labels = np.asarray(data["labels"])
    if inputs.dtype.kind not in "iuf" or inputs.shape[1:] != shape or inputs.shape[0] < 1:
        raise SubmissionError(
            f"`inputs` has shape {inputs.shape} ({inputs.dtype}); expected numbers of shape "
            f"(N, {', '.join(map(str, shape))}) as model.input.shape declares"
        )
    if inputs.shape[0] > config.intake.max_samples:
        raise SubmissionError(
            f"submission {path} holds {inputs.shape[0]} samples, more than intake.max_samples "
            f"= {config.intake.max_samples}; split it, or raise the limit in hardenml.toml"
        )
    if labels.dtype.kind not in "iu" or labels.shape != (inputs.shape[0],):
        raise SubmissionError(
            f"`labels` has shape {labels.shape} ({labels.dtype}); expected {inputs.shape[0]} "
            "integer class indices, one per input"
        )
    if labels.min() < 0 or labels.max() >= len(config.model.classes):
        raise SubmissionError(
            f"`labels` must be class indices 0..{len(config.model.classes) - 1} "
            f"(model.classes); found {int(labels.min())}..{int(labels.max())}"
        )
    originals = data.get("originals")
    if originals is not None and (
        originals.dtype.kind not in "iuf" or originals.shape != inputs.shape
    ):
        raise SubmissionError(
            f"`originals` has shape {originals.shape}; expected {inputs.shape}, one per input"
        )
    norm = _text(data, "norm")
    if norm is not None and norm not in NORMS:
        raise SubmissionError(f"`norm` is {norm!r}; expected one of {list(NORMS)}")
    submitter = _text(data, "submitter")
    if submitter is None:
        raise SubmissionError("`submitter` is empty: name who sent it, to credit them")
    return Submission(
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
        inputs=inputs.astype(np.float32),
        labels=labels.astype(np.int64),
        originals=None if originals is None else originals.astype(np.float32),
        submitter=submitter,
        contact=_text(data, "contact"),
        threat=_text(data, "threat"),
        norm=norm,
        budget=_number(data, "budget", float),
        queries=_number(data, "queries", int),
    )


@dataclass(frozen=True)
class SampleVerdict:
    index: int
    in_scope: bool
    reproduced: bool
    reason: str  # why it is out of scope, or what the model did
    distance: float | None = None
    threat: str | None = None  # the declared threat whose budget covers it
    budget: float | None = None


@dataclass(frozen=True)
class IntakeVerdict:
    """Per sample: inside the threat model or not (and why), and whether it reproduced."""

    samples: list[SampleVerdict]
    refusal: list[str] = field(default_factory=list)  # reasons that refuse the whole file

    @property
    def reproduced(self) -> list[SampleVerdict]:
        return [s for s in self.samples if s.in_scope and s.reproduced]

    @property
    def in_scope(self) -> list[SampleVerdict]:
        return [s for s in self.samples if s.in_scope]

    @property
    def outcome(self) -> str:
        if self.refusal or not self.in_scope:
            return "refused"
        return "reproduced" if self.reproduced else "not-reproduced"

    def reasons(self, limit: int = 10) -> list[str]:
        """Why the file or its samples were refused, the first `limit` sample reasons."""
        if self.refusal:
            return list(self.refusal)
        out = []
        outside = [s for s in self.samples if not s.in_scope]
        out += [f"sample {s.index}: {s.reason}" for s in outside[:limit]]
        if len(outside) > limit:
            out.append(f"... and {len(outside) - limit} more samples outside the threat model")
        return out


def _declared_budgets(
    threats: Mapping[str, Threat], config: HardenConfig
) -> dict[str, list[tuple[float, str]]]:
    """Norm -> (budget, threat name) of every declared norm-ball threat, smallest first."""
    out: dict[str, list[tuple[float, str]]] = {}
    for spec in config.threats:
        threat = threats.get(spec.name)
        space = None if threat is None else threat.threat_space()
        if space in NORMS:
            out.setdefault(str(space), []).extend((float(b), spec.name) for b in spec.budgets)
    return {norm: sorted(pairs) for norm, pairs in out.items()}


def _query_limit(threats: Mapping[str, Threat]) -> int | None:
    """The most queries per sample any declared query-limited threat may spend."""
    limits = [int(t.queries) for t in threats.values() if hasattr(t, "queries")]
    return max(limits) if limits else None


def _file_refusals(
    submission: Submission, budgets: Budgets, threats: Mapping[str, Threat]
) -> list[str]:
    """Reasons that put the whole submission outside the threat model."""
    refusal = []
    if submission.originals is None:
        refusal.append(
            "no `originals`: without the clean inputs no perturbation can be measured, so no "
            "budget of the threat model can be checked; resubmit with `originals`"
        )
    if submission.threat is not None and submission.threat not in threats:
        refusal.append(
            f"claimed threat {submission.threat!r} is not declared in the threat model "
            f"(declared: {sorted(threats)})"
        )
    if not budgets:
        refusal.append("the threat model declares no norm-bounded threat (linf or l2)")
    elif submission.norm is not None and submission.norm not in budgets:
        refusal.append(
            f"claimed norm {submission.norm} is not one the threat model declares "
            f"({sorted(budgets)})"
        )
    if submission.budget is not None and budgets:
        norms = [submission.norm] if submission.norm in budgets else list(budgets)
        largest = max(budgets[n][-1][0] for n in norms if n is not None)
        if submission.budget > largest + TOLERANCE:
            refusal.append(
                f"claimed budget {submission.budget:g} exceeds the largest declared budget "
                f"{largest:g}: outside the threat model"
            )
    limit = _query_limit(threats)
    if submission.queries is not None and limit is not None and submission.queries > limit:
        refusal.append(
            f"claimed {submission.queries} queries per sample exceed the declared query "
            f"limit of {limit}: outside the threat model"
        )
    return refusal


def check_submission(
    submission: Submission, config: HardenConfig, target: Target, threats: Mapping[str, Threat]
) -> IntakeVerdict:
    """Judge every sample of `submission` against the declared threat model and re-run it on
    `target` (`threats`: the declared threats, built, by name)."""
    budgets = _declared_budgets(threats, config)
    refusal = _file_refusals(submission, budgets, threats)
    inputs = torch.from_numpy(submission.inputs)
    labels = torch.from_numpy(submission.labels)
    predicted = target.predict(inputs).cpu()
    lo, hi = config.model.input.bounds
    flat = inputs.reshape(len(inputs), -1)
    outside_bounds = ((flat < lo - TOLERANCE) | (flat > hi + TOLERANCE)).any(dim=1)
    clean_right = torch.ones(len(inputs), dtype=torch.bool)
    distances: dict[str, torch.Tensor] = {}
    if submission.originals is not None:
        originals = torch.from_numpy(submission.originals)
        clean_right = target.predict(originals).cpu() == labels
        norms = [submission.norm] if submission.norm in budgets else list(budgets)
        distances = {
            n: perturbation_size(originals, inputs, n)  # type: ignore[arg-type]
            for n in norms
            if n is not None
        }
    samples = []
    for i in range(len(inputs)):
        flipped = bool(predicted[i] != labels[i])
        if refusal:
            samples.append(SampleVerdict(i, False, False, "the submission is refused as a whole"))
            continue
        if bool(outside_bounds[i]):
            samples.append(
                SampleVerdict(i, False, False, f"outside model.input.bounds [{lo:g}, {hi:g}]")
            )
            continue
        covered = _covering(i, distances, budgets, submission.budget)
        if isinstance(covered, str):
            samples.append(SampleVerdict(i, False, False, covered))
            continue
        distance, threat, budget = covered
        if not bool(clean_right[i]):
            why = "the model already misclassifies its original: not an attack"
            samples.append(SampleVerdict(i, True, False, why, distance, threat, budget))
            continue
        what = "the model misclassifies it" if flipped else "the model classifies it correctly"
        samples.append(SampleVerdict(i, True, flipped, what, distance, threat, budget))
    return IntakeVerdict(samples, refusal)


def _covering(
    i: int,
    distances: Mapping[str, torch.Tensor],
    budgets: Budgets,
    claimed: float | None,
) -> tuple[float, str, float] | str:
    """The distance, threat and budget that cover sample `i`, or why none does."""
    said = []
    for norm, sizes in distances.items():
        distance = float(sizes[i])
        if claimed is not None and distance > claimed + TOLERANCE:
            said.append(f"{norm} distance {distance:.4g} exceeds the claimed budget {claimed:g}")
            continue
        for budget, threat in budgets[norm]:
            if distance <= budget + TOLERANCE:
                return distance, threat, budget
        said.append(
            f"{norm} distance {distance:.4g} to its original exceeds the largest declared "
            f"budget {budgets[norm][-1][0]:g} ({budgets[norm][-1][1]})"
        )
    return "; ".join(said) + ": outside the threat model"
