"""Run the declared threats over the evaluation data and measure what they find."""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from hardenml.config import HardenConfig
from hardenml.data import Dataset
from hardenml.scan.metrics import Measurement, proportion
from hardenml.scan.policy import Finding, PolicyCheck, checks_for, finding_for
from hardenml.targets import Target
from hardenml.threats import Threat

EVIDENCE_PER_THREAT = 32


class Progress(Protocol):
    """Where long work reports how far it got (the CLI passes a rich progress bar)."""

    def task(self, label: str, total: int) -> Callable[[int], None]: ...


class SilentProgress:
    def task(self, label: str, total: int) -> Callable[[int], None]:
        return lambda advance: None


@dataclass
class ScanResult:
    run_id: str
    model: str
    model_sha256: str
    data_sha256: str
    seed: int
    n: int
    measurements: list[Measurement]
    checks: list[PolicyCheck]
    findings: list[Finding]
    started: str
    finished: str
    data_provenance: dict[str, Any] = field(default_factory=dict)
    scan_fingerprint: str = ""

    def measurement(self, key: str) -> Measurement:
        return next(m for m in self.measurements if m.key == key)


def derive_seed(seed: int, *parts: object) -> int:
    """An independent, reproducible seed for one unit of work (threat, budget, batch)."""
    text = "|".join([str(seed), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def run_scan(
    config: HardenConfig,
    target: Target,
    data: Dataset,
    threats: dict[str, Threat],
    *,
    model_sha256: str,
    seed: int | None = None,
    progress: Progress | None = None,
) -> ScanResult:
    """Clean and robust accuracy per threat and budget, policy checks and findings."""
    progress = progress or SilentProgress()
    seed = config.data.seed if seed is None else seed
    confidence = config.policy.confidence
    run_id = uuid.uuid4().hex[:12]
    started = datetime.now(UTC).isoformat(timespec="seconds")
    x_all = torch.from_numpy(data.x)
    y_all = torch.from_numpy(data.y)
    n = len(data)
    need_grad = any(t.needs_gradients for t in threats.values())
    target.check(x_all, need_gradients=need_grad)

    clean_hits = 0
    advance = progress.task("clean accuracy", n)
    for part in _batches(n, 512):
        clean_hits += int((target.predict(x_all[part]) == y_all[part]).sum())
        advance(part.stop - part.start)
    measurements = [proportion("clean_accuracy", clean_hits, n, confidence=confidence, seed=seed)]

    evidence: dict[tuple[str, float], list[dict[str, Any]]] = {}
    artifacts = config.artifacts_dir / run_id
    for threat_cfg in config.threats:
        threat = threats[threat_cfg.name]
        for budget in threat_cfg.budgets:
            advance = progress.task(f"{threat_cfg.name} @ {budget:g}", n)
            robust = 0
            keep: dict[str, list[np.ndarray]] = {"x": [], "x_adv": [], "y": [], "pred": []}
            for b, part in enumerate(_batches(n, threat_cfg.batch_size)):
                gen = torch.Generator().manual_seed(derive_seed(seed, threat_cfg.name, budget, b))
                result = threat(target, x_all[part], y_all[part], budget=budget, generator=gen)
                robust += int(result.robust_correct.sum())
                _collect(
                    keep,
                    target,
                    x_all[part],
                    y_all[part],
                    result.x_adv,
                    result.clean_correct & result.success,
                )
                advance(part.stop - part.start)
            measurements.append(
                proportion(
                    "robust_accuracy",
                    robust,
                    n,
                    threat=threat_cfg.name,
                    budget=budget,
                    confidence=confidence,
                    seed=seed,
                )
            )
            if keep["x"]:
                evidence[(threat_cfg.name, budget)] = [
                    _save_evidence(artifacts, f"{threat_cfg.name}-{budget:g}", keep, config.root)
                ]

    checks = checks_for(config, measurements)
    findings = [
        finding_for(config, c, evidence.get((c.threat or "", c.budget or 0.0)))
        for c in checks
        if not c.passed and c.measurement is not None
    ]
    return ScanResult(
        run_id=run_id,
        model=config.model.name,
        model_sha256=model_sha256,
        data_sha256=data.sha256,
        seed=seed,
        n=n,
        measurements=measurements,
        checks=checks,
        findings=findings,
        started=started,
        finished=datetime.now(UTC).isoformat(timespec="seconds"),
        data_provenance=data.provenance,
    )


def _collect(
    keep: dict[str, list[np.ndarray]],
    target: Target,
    x: torch.Tensor,
    y: torch.Tensor,
    x_adv: torch.Tensor,
    flipped: torch.Tensor,
) -> None:
    room = EVIDENCE_PER_THREAT - sum(len(a) for a in keep["x"])
    idx = flipped.nonzero().flatten()[:room]
    if room <= 0 or idx.numel() == 0:
        return
    keep["x"].append(x[idx].numpy())
    keep["x_adv"].append(x_adv[idx].numpy())
    keep["y"].append(y[idx].numpy())
    keep["pred"].append(target.predict(x_adv[idx]).numpy())


def _save_evidence(
    folder: Path, stem: str, keep: dict[str, list[np.ndarray]], root: Path
) -> dict[str, Any]:
    """Adversarial examples beside their originals, as an .npz addressed by sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.concatenate(v) for k, v in keep.items()}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    blob = buffer.getvalue()
    path = folder / f"{stem}.npz"
    path.write_bytes(blob)
    try:
        shown = str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        shown = str(path)
    return {
        "kind": "adversarial_examples",
        "path": shown,
        "count": len(arrays["y"]),
        "sha256": hashlib.sha256(blob).hexdigest(),
    }
