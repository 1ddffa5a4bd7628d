"""A SECURITY.md disclosure-policy starter, with its scope taken from the threat model.

The scope is what `hardenml intake` will judge a report against: the model, its input
bounds, each declared threat at its largest budget (in the threat's own words), the norms
and query limits. Timelines come from `policy.sla_days`; the safe-harbour terms follow the
common core of disclose.io's and CISA's templates (authorised good-faith research, no legal
action, limits that keep users and data safe): https://disclose.io/ and
https://www.cisa.gov/vulnerability-disclosure-policy-template. A starter: the project
reviews it, with its lawyers where it has them, before publishing.
"""

from __future__ import annotations

from hardenml.config import HardenConfig
from hardenml.targets import is_chat_kind, kind_options
from hardenml.threats import validate_threats

# Days to acknowledge a report: the first event of `hardenml intake` is that acknowledgement.
ACKNOWLEDGE_DAYS = 3
# Days after a fix ships, or after the report when there is none, before disclosure is free.
DISCLOSURE_DAYS = 90


def _chat_scope(config: HardenConfig) -> list[str]:
    """A chat model's scope: the declared probes, their turns, and the submission limits
    `hardenml intake` checks a prompt submission against."""
    threats = validate_threats(config)
    lines = [
        f"- Model `{config.model.name}` ({config.model.kind}): conversations with the deployed "
        "chat endpoint, sent as a prompt submission (JSON, docs/intake.md).",
    ]
    for declared in config.threats:
        threat = threats[declared.name]
        turns = ", ".join(f"{b:g}" for b in declared.budgets)
        lines.append(
            f"- `{declared.name}` ({declared.attack}): {threat.describe(max(declared.budgets))}; "
            f"user turns per conversation: {turns}."
        )
    query_budget = getattr(kind_options(config.model), "query_budget", None)
    if query_budget is not None:
        lines.append(f"- Query limit: at most {query_budget} replies per submission.")
    lines.append(
        "- A report counts when it lies inside this threat model: a declared probe, the "
        "behaviour its detector judges, no more user turns than its largest budget, turns of "
        f"at most {config.intake.max_prompt_chars} characters, within the query limit, and "
        "it reproduces when replayed on the deployed model."
    )
    return lines


def _scope(config: HardenConfig) -> list[str]:
    if is_chat_kind(config.model):
        return _chat_scope(config)
    threats = validate_threats(config)
    spec = config.model.input
    lines = [
        f"- Model `{config.model.name}` ({config.model.kind}), inputs of shape "
        f"{list(spec.shape)} within bounds [{spec.bounds[0]:g}, {spec.bounds[1]:g}]; inputs "
        "outside the bounds are out of scope.",
    ]
    limits = []
    for declared in config.threats:
        threat = threats[declared.name]
        largest = max(declared.budgets)
        budgets = ", ".join(f"{b:g}" for b in declared.budgets)
        lines.append(
            f"- `{declared.name}` ({threat.family}, needs {threat.access}): "
            f"{threat.describe(largest)}. Budgets {budgets}."
        )
        queries = getattr(threat, "queries", None)
        if isinstance(queries, int):
            limits.append(f"{queries} queries per input (`{declared.name}`)")
    if limits:
        lines.append(f"- Query limits: at most {'; '.join(limits)}.")
    lines.append(
        "- A report counts when it lies inside this threat model: within the bounds, within "
        "the largest declared budget of its norm measured from the clean original, within the "
        "query limits, and flips inputs the model gets right."
    )
    return lines


def security_policy(config: HardenConfig, *, contact: str) -> str:
    """SECURITY.md for the project of `config`, reports to `contact`."""
    sla = config.policy.sla_days
    lines = [
        f"# Security policy: {config.project.name}",
        "",
        "## Reporting a vulnerability",
        "",
        f"Send reports to {contact}. For an adversarial-input report, attach an `.npz` with "
        "`inputs` (the adversarial inputs), `originals` (the clean inputs they were made "
        "from), `labels` (the true class of each), `submitter` (who to credit) and, "
        "optionally, `contact`, `threat`, `norm` (`linf` or `l2`), `budget` and `queries`. "
        "We re-run every report with `hardenml intake` on the model it names and record the "
        "acknowledgement, the outcome and any finding in our audit ledger; a report that "
        "reproduces opens a finding credited to you.",
        "",
        "## Scope (from our threat model, `hardenml.toml`)",
        "",
        *_scope(config),
        "",
        "Out of scope for adversarial-input reports, but welcome through the same address: "
        "attacks the threat model does not declare (training-data poisoning, model "
        "extraction, membership inference, prompt injection unless declared above) and the "
        "infrastructure around the model. We judge those by hand.",
        "",
        "## Timelines",
        "",
        f"- Acknowledgement within {ACKNOWLEDGE_DAYS} business days.",
        f"- A reproduced report becomes a finding due, by severity: critical {sla.critical} "
        f"days, high {sla.high}, medium {sla.medium}, low {sla.low} (`policy.sla_days`).",
        "- We tell you the outcome (reproduced, not reproduced, or outside the threat model "
        "and why) and when a fix ships.",
        f"- Coordinated disclosure: please wait until the fix ships, or {DISCLOSURE_DAYS} "
        "days after your report, whichever is first.",
        "",
        "## Safe harbour",
        "",
        "We authorise good-faith security research that follows this policy. We will not "
        "pursue or support legal action against you for it, and we will say so to anyone "
        "who asks. Good faith means: test only against models and endpoints in scope, use "
        "your own accounts and data, stop as soon as you reach other people's data and tell "
        "us, do not degrade the service for others (stay within the query limits), and give "
        "us the time above before you disclose.",
        "",
        "## Credit",
        "",
        "Every reproduced report is credited to its submitter in the finding it opens, unless "
        "you ask us not to.",
        "",
    ]
    return "\n".join(lines)
