"""Defences that return a new `Target` plus its artifact, registered by name."""

from hardenml.patch.base import (
    Patch,
    PatchContext,
    PatchError,
    PatchResult,
    PatchUnchanged,
    TrainingAttack,
    policy_attacks,
)
from hardenml.patch.lineage import (
    PATCH_EVENT,
    lineage_for,
    model_section_for,
    recorded_privacy,
    rewrite_model_section,
    write_artifact,
)
from hardenml.patch.registry import (
    available_patches,
    make_patch,
    patch_class,
    patch_parameters,
    remedies_for,
)

__all__ = [
    "PATCH_EVENT",
    "Patch",
    "PatchContext",
    "PatchError",
    "PatchResult",
    "PatchUnchanged",
    "TrainingAttack",
    "available_patches",
    "lineage_for",
    "recorded_privacy",
    "make_patch",
    "model_section_for",
    "patch_class",
    "patch_parameters",
    "policy_attacks",
    "remedies_for",
    "rewrite_model_section",
    "write_artifact",
]
