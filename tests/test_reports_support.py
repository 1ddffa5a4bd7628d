"""Workspaces for the report tests: the digits MLP scanned and gated for real.

Names in the config are hostile on purpose, so every report is checked for escaping.
This module holds helpers only; the tests live in test_reports.py and
test_html_browser.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import save_file
from torch import nn

from hardenml.gate import GateDecision
from hardenml.ledger import FindingState, findings_state
from hardenml.workflow import Workspace, gate

PROJECT = "<script>alert(1)</script>"
OWNER = "<img src=x onerror=alert(2)>"
MODEL = 'digits-mlp"><svg onload=alert(3)>'

CONFIG = """\
version = 1

[project]
name = '{project}'

[model]
name = '{model}'
kind = "pytorch"
factory = "hardenml.zoo:mlp"
factory_kwargs = {{ in_features = 64, classes = 10, hidden = 32 }}
path = "model.safetensors"
classes = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
device = "cpu"

[model.input]
shape = {shape}
bounds = [0.0, 1.0]

[data]
source = "digits"
test_fraction = 0.25
seed = 0
max_samples = 60

[[threats]]
name = "pgd-linf"
attack = "pgd"
budgets = [0.02, 0.05, 0.1]
steps = 5

[policy]
min_clean_accuracy = 0.5

[[policy.robust]]
threat = "pgd-linf"
budget = 0.1
min_accuracy = 0.9

[owners]
"pgd-linf" = '{owner}'
"*" = "ml-platform"
"""


@dataclass
class Gated:
    ws: Workspace
    decision: GateDecision
    findings: dict[str, FindingState]

    @property
    def reports(self) -> Path:
        return self.ws.config.reports_dir


def save_weights(module: nn.Module, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return path


def write_config(folder: Path, *, shape: str = "[64]") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "hardenml.toml"
    config.write_text(CONFIG.format(project=PROJECT, model=MODEL, owner=OWNER, shape=shape))
    return config


def gated_workspace(folder: Path, module: nn.Module, *, shape: str = "[64]") -> Gated:
    """Write weights and config into `folder`, then scan and gate it as the CLI would."""
    save_weights(module, folder / "model.safetensors")
    ws = Workspace.open(write_config(folder, shape=shape))
    decision = gate(ws)
    return Gated(ws, decision, findings_state(ws.ledger.events()))
