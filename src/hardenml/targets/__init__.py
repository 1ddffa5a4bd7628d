"""Adapters that make any model a `Target`; kinds register in `hardenml.targets`."""

from hardenml.targets.base import InputSpec, Target, TargetError
from hardenml.targets.chat_target import ChatKind, ChatModel, ChatOptions, ChatTarget, Message
from hardenml.targets.http_target import HttpOptions, HttpTarget
from hardenml.targets.kinds import NoOptions, TargetKind
from hardenml.targets.loading import file_sha256, input_spec_from_config
from hardenml.targets.onnx_target import OnnxTarget
from hardenml.targets.registry import (
    available_target_kinds,
    is_chat_kind,
    kind_options,
    load_chat_model,
    load_target,
    model_identity,
    target_kind,
    validate_target_config,
)
from hardenml.targets.sklearn_target import SklearnTarget
from hardenml.targets.stochastic import StochasticTarget
from hardenml.targets.torch_target import TorchTarget, pick_device

__all__ = [
    "ChatKind",
    "ChatModel",
    "ChatOptions",
    "ChatTarget",
    "HttpOptions",
    "HttpTarget",
    "InputSpec",
    "Message",
    "NoOptions",
    "OnnxTarget",
    "SklearnTarget",
    "StochasticTarget",
    "Target",
    "TargetError",
    "TargetKind",
    "TorchTarget",
    "available_target_kinds",
    "file_sha256",
    "input_spec_from_config",
    "is_chat_kind",
    "kind_options",
    "load_chat_model",
    "load_target",
    "model_identity",
    "pick_device",
    "target_kind",
    "validate_target_config",
]
