"""Scan a model held in memory: an `nn.Module` or a scikit-learn estimator, with arrays.

The same scan as `hardenml scan` (threats, policy checks, findings, calibration, integrity
checks), without a config file, model file or ledger: the caller passes the model, the
evaluation arrays and the threat model as plain values, and gets the `ScanResult` back.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn

from hardenml._progress import Progress
from hardenml.config import ConfigError, HardenConfig, validation_problems
from hardenml.data import DataError, Dataset
from hardenml.scan import ScanResult, run_scan
from hardenml.targets import InputSpec, SklearnTarget, Target, TorchTarget
from hardenml.threats import validate_threats
from hardenml.workflow import patch_remedy, prepare_threats

__all__ = ["model_sha256", "scan_model"]


def model_sha256(model: nn.Module | Any) -> str:
    """A content hash of an in-memory model: its tensors (name, dtype, shape, bytes) for a
    torch module, its skops serialisation for an estimator (no pickle either way)."""
    digest = hashlib.sha256()
    if isinstance(model, nn.Module):
        for name, tensor in sorted(model.state_dict().items()):
            data = tensor.detach().cpu().contiguous()
            digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}".encode())
            digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()
    import skops.io as sio

    digest.update(sio.dumps(model))
    return digest.hexdigest()


def scan_model(
    model: nn.Module | Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    threats: Sequence[Mapping[str, Any]],
    classes: Sequence[str] | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    policy: Mapping[str, Any] | None = None,
    behaviour: Sequence[Mapping[str, Any]] = (),
    integrity: Mapping[str, Any] | None = None,
    scan: Mapping[str, Any] | None = None,
    reference: tuple[np.ndarray, np.ndarray] | None = None,
    name: str = "in-memory-model",
    seed: int = 0,
    workdir: Path | None = None,
    progress: Progress | None = None,
) -> ScanResult:
    """Scan `model` on the evaluation arrays `x` (shape `(n, *input shape)`) and `y`
    (`(n,)` integer labels).

    Args:
        threats: `[[threats]]` tables as dicts (`{"name": "pgd", "attack": "pgd",
            "budgets": [0.1], "steps": 20}`), checked like a config's.
        classes: class names (default "0", "1", ... for the labels' range).
        bounds: the raw input range the budgets are measured in.
        policy, behaviour, integrity, scan: the config's `[policy]`, `[[behaviour]]`,
            `[integrity]` and `[scan]` tables as dicts (defaults when omitted).
        reference: training arrays `(x, y)` for the data checks and for tabular threats
            with `budget_units = "std"`.
        workdir: where evidence (adversarial examples) is written; a new temporary folder
            by default.
    Raises `ConfigError` naming the bad key, `DataError` for unusable arrays, and
    `TargetError` when the model cannot score the inputs.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y) or len(y) == 0:
        raise DataError(
            f"need x of shape (n, *input shape) and y of shape (n,) with n > 0, got "
            f"{x.shape} and {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"y must hold integer class indices, got dtype {y.dtype}")
    if not np.isfinite(x).all():
        raise DataError("x holds NaN or infinite values; clean or impute them first")
    names = list(classes) if classes is not None else _class_names(model, x, y)
    kind = "pytorch" if isinstance(model, nn.Module) else "sklearn"
    root = workdir or Path(tempfile.mkdtemp(prefix="hardenml-scan-"))
    raw = {
        "project": {"name": name},
        "model": {
            "name": name,
            "kind": kind,
            "classes": names,
            "input": {"shape": list(x.shape[1:]), "bounds": list(bounds)},
            "device": "auto",
        },
        "data": {"source": "<in-memory arrays>", "seed": seed},
        "threats": [dict(t) for t in threats],
        "policy": dict(policy or {}),
        "behaviour": [dict(b) for b in behaviour],
        "integrity": dict(integrity or {}),
        "scan": dict(scan or {}),
        "root": root,
    }
    try:
        config = HardenConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(None, validation_problems(exc, raw)) from None
    target = _target(model, config, names)
    built = validate_threats(config)
    data = Dataset(x.astype(np.float32), y.astype(np.int64), tuple(names), {"source": "memory"})
    ref = None
    if reference is not None:
        ref = Dataset(
            np.asarray(reference[0], dtype=np.float32),
            np.asarray(reference[1], dtype=np.int64),
            tuple(names),
            {"source": "memory", "split": "train"},
        )
        prepare_threats(built, ref)
    return run_scan(
        config,
        target,
        data,
        built,
        model_sha256=model_sha256(model),
        seed=seed,
        progress=progress,
        reference=ref,
        remedy=patch_remedy(config),
    )


def _class_names(model: nn.Module | Any, x: np.ndarray, y: np.ndarray) -> list[str]:
    """ "0", "1", ... for as many classes as the model scores (its output width, or an
    estimator's `classes_`), at least as many as the labels name."""
    width = int(y.max()) + 1
    if isinstance(model, nn.Module):
        with torch.no_grad():
            sample = torch.as_tensor(x[:1], dtype=torch.float32)
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            width = max(width, int(model(sample.to(device)).shape[-1]))
    elif hasattr(model, "classes_"):
        width = max(width, len(model.classes_))
    return [str(c) for c in range(width)]


def _target(model: nn.Module | Any, config: HardenConfig, classes: list[str]) -> Target:
    spec = InputSpec(
        shape=tuple(config.model.input.shape),
        bounds=(float(config.model.input.bounds[0]), float(config.model.input.bounds[1])),
    )
    if isinstance(model, nn.Module):
        return TorchTarget(model, input_spec=spec, classes=classes, device=config.model.device)
    return SklearnTarget(model, input_spec=spec, classes=classes)
