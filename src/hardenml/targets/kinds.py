"""The `TargetKind` plugin contract: how one `model.kind` becomes a `Target`.

Each kind registers in the `hardenml.targets` entry-point group, exactly as a third-party
package would (`onnx = "hardenml.targets.onnx_target:OnnxKind"`), and is imported only
when a config names it. A kind declares whether it reads a model file and the schema of
its `[model.options]` table, so that a typo in an option is a config error naming the key
and the line, like every other key.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from hardenml.config import ModelConfig
    from hardenml.targets.base import Target


class NoOptions(BaseModel):
    """A kind that takes no `[model.options]`: any key given there is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetKind(ABC):
    """How one `model.kind` is loaded. Subclasses set the class attributes and `load`.

    `needs_file`: the kind reads `model.path` (a network endpoint does not).
    `suffixes`: file endings it accepts, for the error when another is given (empty: any).
    `options`: the pydantic schema of `[model.options]` (`extra="forbid"`).
    `description`: one line for `hardenml` help and the docs.
    `artifact_suffix`: the ending of the files `save` writes; None (the default): the kind
    cannot write its models, so no patched model of it can be stored.
    `reads_input`, `reads_data`: the kind's models read `[model.input]`-shaped inputs and
    are scanned on `[data]`, so a config must declare both tables (a chat model reads
    conversations and is probed with its own prompts: neither).
    """

    needs_file: ClassVar[bool] = True
    reads_input: ClassVar[bool] = True
    reads_data: ClassVar[bool] = True
    # The kind builds its model with `model.factory` (a file of weights needs a module).
    needs_factory: ClassVar[bool] = False
    suffixes: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[type[BaseModel]] = NoOptions
    description: ClassVar[str] = ""
    artifact_suffix: ClassVar[str | None] = None

    def identity(self, model: ModelConfig, path: Path | None, options: Any) -> str:
        """A sha256 that changes when the model does: the file's hash for file kinds. A
        kind without a file (an endpoint) overrides this with what identifies its model."""
        from hardenml.targets.loading import file_sha256

        if path is None:
            raise TypeError(f"{type(self).__name__} reads no file: override identity()")
        return file_sha256(path)

    @abstractmethod
    def load(self, model: ModelConfig, path: Path | None, options: Any, *, trust: bool) -> Target:
        """The model as a `Target`. `path` is resolved (None when `needs_file` is False);
        `options` is an instance of `self.options`. Raise `TargetError` with a message that
        names the file or key and the fix for anything that cannot be loaded."""

    def save(self, target: Target, path: Path) -> None:
        """Write `target`'s model to `path`, so that `load` with the same `[model]` section
        reads it back: how a patched model becomes an artifact. Kinds that can write their
        models override this and set `artifact_suffix`."""
        from hardenml.targets.base import TargetError

        raise TargetError(f"{type(self).__name__} cannot write its models to a file")
