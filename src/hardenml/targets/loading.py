"""What the built-in target kinds share: safe file loading, hashes, the input spec."""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hardenml.config import ModelConfig
from hardenml.targets.base import InputSpec, TargetError

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_PICKLE_SUFFIXES = {".pkl", ".pickle", ".joblib"}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def input_spec_from_config(model: ModelConfig) -> InputSpec:
    spec = model.input
    return InputSpec(
        shape=tuple(spec.shape),
        dtype=_DTYPES[spec.dtype],
        bounds=(float(spec.bounds[0]), float(spec.bounds[1])),
        mean=tuple(spec.mean) if spec.mean is not None else None,
        std=tuple(spec.std) if spec.std is not None else None,
        preprocessing=tuple(model.preprocessing),
    )


def import_factory(ref: str) -> Any:
    """Resolve `package.module:attr.path` to the object it names."""
    module_name, _, attr = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise TargetError(f"cannot import module {module_name!r} of model.factory: {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TargetError(f"model.factory {ref!r}: {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def load_torch_module(model: ModelConfig, path: Path) -> nn.Module:
    """The module `model.factory` builds, with the safetensors weights at `path` loaded."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    assert model.factory is not None  # the config validator guarantees it
    factory = import_factory(model.factory)
    module = factory(**model.factory_kwargs)
    if not isinstance(module, nn.Module):
        raise TargetError(
            f"model.factory {model.factory!r} returned {type(module).__name__}, not an nn.Module"
        )
    if path.suffix != ".safetensors":
        raise TargetError(
            f"pytorch weights must be a .safetensors file (got {path.name}); pickled "
            "checkpoints can run code on load. Convert with safetensors.torch.save_file"
        )
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise TargetError(f"cannot read safetensors weights {path}: {exc}") from None
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        detail = str(exc).split("\n", 1)[-1].strip()
        raise TargetError(
            f"weights {path.name} do not fit the module built by {model.factory}: {detail}"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        raise TargetError(
            f"weights {path.name} do not fit the module built by {model.factory}: "
            f"missing {list(result.missing_keys)[:5]}, "
            f"unexpected {list(result.unexpected_keys)[:5]}"
        )
    return module


def load_sklearn(path: Path, *, trust: bool) -> Any:
    """Load a skops file; pickle/joblib only when the caller explicitly trusts the file."""
    if path.suffix in _PICKLE_SUFFIXES:
        if not trust:
            raise TargetError(
                f"{path.name} is a pickle/joblib file, which can run arbitrary code when "
                "loaded. Save the model with skops (skops.io.dump) or, if you trust this "
                "file, pass --trust (or set model.trust = true)"
            )
        import joblib

        return joblib.load(path)  # opt-in: trust was given explicitly
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:
        raise TargetError(f"{path} is not a readable skops file: {exc}") from None
    if untrusted and not trust:
        raise TargetError(
            f"{path.name} contains types skops does not trust by default: {untrusted}. "
            "Review them; pass --trust to load it anyway"
        )
    return sio.load(path, trusted=untrusted or None)
