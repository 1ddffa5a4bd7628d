"""What the built-in target kinds share: safe file loading, hashes, the input spec."""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Sequence
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
        raise TargetError(
            f"cannot import module {module_name!r} of model.factory: {exc}. The workspace "
            "folder (where hardenml.toml is) is on the import path, so a module file there "
            "is found; otherwise install the package that defines it"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TargetError(f"model.factory {ref!r}: {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


TORCH_CHECKPOINT_SUFFIXES = (".pt", ".pth")


def load_torch_module(model: ModelConfig, path: Path, *, trust: bool = False) -> nn.Module:
    """The module `model.factory` builds, with the weights at `path` loaded: safetensors,
    or with `trust` a `.pt`/`.pth` state dict read by `torch.load(weights_only=True)`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if model.factory is None:
        raise TargetError(
            "model.factory is not set: a pytorch model needs factory = "
            "'package.module:function' that builds the nn.Module its weights fit"
        )
    factory = import_factory(model.factory)
    try:
        module = factory(**model.factory_kwargs)
    except Exception as exc:  # the user's code: whatever it raises, name the call and the fix
        raise TargetError(
            f"model.factory {model.factory!r} failed when called with model.factory_kwargs = "
            f"{model.factory_kwargs}: {type(exc).__name__}: {exc}; make factory_kwargs match "
            "the factory's parameters"
        ) from None
    if not isinstance(module, nn.Module):
        raise TargetError(
            f"model.factory {model.factory!r} returned {type(module).__name__}, not an nn.Module"
        )
    if path.suffix.lower() in TORCH_CHECKPOINT_SUFFIXES:
        state = _torch_checkpoint(path, trust=trust)
    elif path.suffix != ".safetensors":
        raise TargetError(
            f"pytorch weights must be a .safetensors file, or .pt/.pth with --trust "
            f"(got {path.name}). Convert with safetensors.torch.save_file"
        )
    else:
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


def _torch_checkpoint(path: Path, *, trust: bool) -> dict[str, Any]:
    """A state dict from a pickled torch checkpoint, only when trusted, and even then with
    torch's restricted unpickler (`weights_only=True`: tensors and plain containers)."""
    if not trust:
        raise TargetError(
            f"{path.name} is a pickled torch checkpoint, which can run code when loaded. "
            "Convert it with safetensors.torch.save_file or, if you trust this file, pass "
            "--trust (or set model.trust = true); it is then read with weights_only=True"
        )
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle and torch raise many kinds for a bad file
        raise TargetError(f"cannot read torch checkpoint {path}: {exc}") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not (isinstance(loaded, dict) and all(isinstance(v, torch.Tensor) for v in loaded.values())):
        raise TargetError(
            f"{path.name} holds a {type(loaded).__name__}, not a state dict of tensors; save "
            "module.state_dict() (hardenml builds the module with model.factory)"
        )
    return loaded


def load_sklearn(path: Path, *, trust: bool, trusted_types: Sequence[str] = ()) -> Any:
    """Load a skops file; pickle/joblib only when the caller explicitly trusts the file.

    skops refuses types outside its default allow-list (a RandomForest's
    `sklearn.tree._tree.Tree`, for one). `trusted_types` (the config's
    `model.trusted_types`) names the ones the user reviewed, so trusting them does not
    need the blanket `--trust`, which would also allow pickle."""
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
    unreviewed = [t for t in untrusted if t not in set(trusted_types)]
    if unreviewed and not trust:
        listed = ", ".join(f'"{t}"' for t in unreviewed)
        raise TargetError(
            f"{path.name} contains types skops does not trust by default: {unreviewed}. "
            f"Review them, then list them in the config: model.trusted_types = [{listed}] "
            "(or pass --trust, which also allows pickle files)"
        )
    return sio.load(path, trusted=untrusted or None)
