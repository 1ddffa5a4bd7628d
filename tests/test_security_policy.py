"""`hardenml init --security-policy`: a SECURITY.md whose scope is the threat model (threats,
budgets, bounds, query limits), with timelines from `policy.sla_days` and safe-harbour
terms; opt-in, keeps an existing config, and never overwrites without --force."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from hardenml.cli import app
from workspace import write_workspace

runner = CliRunner()

SQUARE = """
[[threats]]
name = "square-linf"
attack = "square"
budgets = [0.05]
queries = 500
"""


def test_security_md_takes_its_scope_from_the_threat_model(
    tmp_path: Path, digits_weights: Path
) -> None:
    cfg = write_workspace(tmp_path / "ws", digits_weights)
    text = cfg.read_text().replace("[policy]", SQUARE + "\n[policy]\nsla_days = { high = 21 }", 1)
    cfg.write_text(text)
    made = runner.invoke(
        app,
        ["init", "--path", str(cfg), "--security-policy", "--security-contact", "sec@example.org"],
    )
    assert made.exit_code == 0, made.output
    assert cfg.read_text() == text, "the existing config is kept"
    policy = (cfg.parent / "SECURITY.md").read_text()
    assert "Send reports to sec@example.org" in policy
    assert "`pgd-linf` (gradient, needs gradients)" in policy and "Budgets 0.02, 0.1." in policy
    assert "changes each input by at most 0.1" in policy
    assert "at most 500 queries per input (`square-linf`)" in policy
    assert "within bounds [0, 1]" in policy and "Model `digits-mlp` (pytorch)" in policy
    assert "high 21" in policy and "## Safe harbour" in policy
    again = runner.invoke(
        app,
        ["init", "--path", str(cfg), "--security-policy", "--security-contact", "x@example.org"],
    )
    assert again.exit_code == 2 and "SECURITY.md exists" in again.output


def test_the_policy_is_opt_in_and_needs_a_contact(tmp_path: Path) -> None:
    cfg = tmp_path / "hardenml.toml"
    plain = runner.invoke(app, ["init", "--path", str(cfg)])
    assert plain.exit_code == 0 and not (tmp_path / "SECURITY.md").exists()
    no_contact = runner.invoke(app, ["init", "--path", str(cfg), "--security-policy"])
    assert no_contact.exit_code == 2 and "--security-contact" in no_contact.output
