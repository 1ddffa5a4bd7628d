"""Adapters that make any model a `Target`."""

from hardenml.targets.base import InputSpec, Target, TargetError
from hardenml.targets.loading import file_sha256, input_spec_from_config, load_target
from hardenml.targets.sklearn_target import SklearnTarget
from hardenml.targets.torch_target import TorchTarget, pick_device

__all__ = [
    "InputSpec",
    "SklearnTarget",
    "Target",
    "TargetError",
    "TorchTarget",
    "file_sha256",
    "input_spec_from_config",
    "load_target",
    "pick_device",
]
