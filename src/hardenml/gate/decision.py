"""Policy -> verdict -> exit code."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from hardenml.config import HardenConfig
from hardenml.ledger import FindingState, RunRecord
from hardenml.scan import Measurement, PolicyCheck, checks_for

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_USAGE = 2


@dataclass
class GateDecision:
    passed: bool
    checks: list[PolicyCheck]
    blocking_findings: list[FindingState]
    run: RunRecord
    reasons: list[str]
    decided_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def exit_code(self) -> int:
        return EXIT_PASS if self.passed else EXIT_FAIL

    @property
    def status(self) -> str:
        return "pass" if self.passed else "fail"


def decide(config: HardenConfig, run: RunRecord, findings: dict[str, FindingState]) -> GateDecision:
    """Evaluate today's policy against the run's measurements and the open findings."""
    measurements = [Measurement.from_dict(m) for m in run.payload["measurements"]]
    checks = checks_for(config, measurements)
    reasons = []
    for check in checks:
        if check.measurement is None:
            reasons.append(f"{check.name}: not measured in run {run.run_id}; rescan")
        elif not check.passed:
            m = check.measurement
            reasons.append(
                f"{check.name} = {m.value:.3f} (95% CI {m.ci_low:.3f}-{m.ci_high:.3f}, n={m.n}) "
                f"< required {check.threshold:.3f}"
            )
    blocking = sorted(
        (
            f
            for f in findings.values()
            if f.is_open and f.model == run.model and f.severity in config.policy.fail_on
        ),
        key=lambda f: ("critical", "high", "medium", "low").index(f.severity),
    )
    for f in blocking:
        reasons.append(f"open {f.severity} finding {f.finding_id}: {f.title}")
    passed = all(c.passed for c in checks) and not blocking
    return GateDecision(
        passed=passed, checks=checks, blocking_findings=blocking, run=run, reasons=reasons
    )
