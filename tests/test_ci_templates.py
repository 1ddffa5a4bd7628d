"""The CI templates in docs/ci: they parse as YAML, wire the reports where the gate writes
them, and every `hardenml ...` command they (and the page beside them) call exists in the
CLI with the options given."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from hardenml.cli import app
from hardenml.config import ReportsConfig
from hardenml.report import JUNIT_NAME, SARIF_NAME
from hardenml.workflow import GATE_REPORT_NAME

CI = Path(__file__).parents[1] / "docs" / "ci"
GITHUB = CI / "github-actions.yml"
GITLAB = CI / "gitlab-ci.yml"
REPORTS = ReportsConfig().dir.as_posix()


def shell_lines(node: Any) -> list[str]:
    """Every line of every shell command in a CI file: GitHub's `run`, GitLab's `script`,
    `before_script` and `after_script`."""
    lines: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "run" and isinstance(value, str):
                lines += value.splitlines()
            elif key in ("script", "before_script", "after_script"):
                items = value if isinstance(value, list) else [value]
                lines += [line for item in items for line in str(item).splitlines()]
            else:
                lines += shell_lines(value)
    elif isinstance(node, list):
        for item in node:
            lines += shell_lines(item)
    return lines


def hardenml_calls(lines: list[str]) -> list[list[str]]:
    """The arguments of each `hardenml ...` (or `python -m hardenml ...`) call, up to the
    end of the command (a pipe, `;`, `&&`, a redirection)."""
    calls = []
    for line in lines:
        for segment in re.split(r"\|\||&&|[|;]|\$\(", line):
            words = shlex.split(segment.replace(")", " "), comments=True)
            while words and re.fullmatch(r"\w+=.*", words[0]):  # VAR=value before a command
                words.pop(0)
            if words[:1] == ["hardenml"]:
                calls.append(_until_redirect(words[1:]))
            elif len(words) > 2 and words[1:3] == ["-m", "hardenml"]:
                calls.append(_until_redirect(words[3:]))
    return calls


def _until_redirect(args: list[str]) -> list[str]:
    out = []
    for arg in args:
        if arg.startswith((">", "<", "2>")):
            break
        out.append(arg)
    return out


def check_call(args: list[str]) -> None:
    """Resolve `args` against the real command tree: each subcommand exists and each
    option is one that command takes."""
    command: Any = typer.main.get_command(app)
    rest = list(args)
    # A group (typer's TyperGroup is not a click.Group) has `commands`.
    while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        sub = command.commands.get(name)
        assert sub is not None, f"`hardenml {' '.join(args)}`: no command {name!r}"
        command = sub
    assert not hasattr(command, "commands"), f"`hardenml {' '.join(args)}` names no command"
    options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    for arg in rest:
        if arg.startswith("-"):
            flag = arg.split("=", 1)[0]
            assert flag in options, f"`hardenml {' '.join(args)}`: no option {flag}"


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("path", [GITHUB, GITLAB], ids=lambda p: p.name)
def test_every_hardenml_command_a_template_calls_exists(path: Path) -> None:
    calls = hardenml_calls(shell_lines(_load(path)))
    assert ["gate"] in calls
    for call in calls:
        check_call(call)


def test_the_commands_on_the_ci_page_exist() -> None:
    page = (CI / "README.md").read_text()
    lines = [
        line
        for block in re.findall(r"```sh\n(.*?)```", page, flags=re.S)
        for line in block.splitlines()
    ]
    for block in re.findall(r"```yaml\n(.*?)```", page, flags=re.S):
        lines += shell_lines(yaml.safe_load(block))
    calls = hardenml_calls(lines)
    assert ["gate"] in calls
    assert ["gate", "--json"] in calls
    for call in calls:
        check_call(call)


def test_the_checker_rejects_commands_and_options_that_do_not_exist() -> None:
    check_call(["findings", "list", "--json"])
    for bad in (["gate", "--jsn"], ["publish"], ["findings"], ["ledger", "verify", "--fix"]):
        with pytest.raises(AssertionError):
            check_call(bad)


def test_the_github_workflow_uploads_sarif_publishes_junit_and_keeps_the_reports() -> None:
    workflow = _load(GITHUB)
    assert workflow["permissions"]["security-events"] == "write"
    (job,) = workflow["jobs"].values()
    steps = job["steps"]
    uses = {s["uses"].split("@")[0]: s for s in steps if "uses" in s}
    gate_index = next(i for i, s in enumerate(steps) if s.get("run") == "hardenml gate")
    sarif = uses["github/codeql-action/upload-sarif"]
    assert sarif["with"]["sarif_file"] == f"{REPORTS}/{SARIF_NAME}"
    junit = uses["mikepenz/action-junit-report"]
    assert junit["with"]["report_paths"] == f"{REPORTS}/{JUNIT_NAME}"
    kept = uses["actions/upload-artifact"]["with"]["path"].split()
    assert {f"{REPORTS}/", GATE_REPORT_NAME, "artifacts/"} <= set(kept)
    # Everything after the gate runs when the gate fails.
    for step in steps[gate_index + 1 :]:
        assert "!cancelled()" in step["if"], step.get("name")


def test_the_gitlab_job_hands_junit_to_gitlab_and_keeps_artifacts_on_failure() -> None:
    (job,) = (v for k, v in _load(GITLAB).items() if isinstance(v, dict) and "script" in v)
    artifacts = job["artifacts"]
    assert artifacts["when"] == "always"
    assert artifacts["reports"]["junit"] == f"{REPORTS}/{JUNIT_NAME}"
    # The JUnit attachments point under artifacts/, which must be kept for GitLab to show them.
    assert {f"{REPORTS}/", GATE_REPORT_NAME, "artifacts/"} <= set(artifacts["paths"])
