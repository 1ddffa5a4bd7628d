"""A text workspace end to end through the `hardenml` command: scan, findings, gate, HTML,
and bad text inputs that must end in a message (exit 2), never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from markupsafe import escape
from typer.testing import CliRunner

from hardenml.cli import app
from hardenml.demo_text import write_text_workspace
from hardenml.report.html_examples import visible_text

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def text_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's TF-IDF workspace, small: 60 snippets scanned, no word-level threat."""
    folder = tmp_path_factory.mktemp("text-ws")
    write_text_workspace(folder, max_samples=60, train_samples=1500, word_level=False)
    return folder


@pytest.mark.slow
def test_text_scan_findings_and_gate_end_to_end(text_ws: Path, monkeypatch) -> None:
    monkeypatch.chdir(text_ws)
    scan = run("scan")
    assert scan.exit_code == 0, scan.output
    assert "robust_accuracy[typos@1]" in scan.output
    assert "gradient-masking checks do not apply to 'typos'" in scan.output

    findings = json.loads(run("findings", "list", "--json").output)
    typo = next(f for f in findings if f["threat"] == "typos" and f["budget"] == 1)
    texts = next(e for e in typo["evidence"] if e["kind"] == "text_examples")
    rows = json.loads((text_ws / texts["path"]).read_text())
    assert rows and all(r["original"] != r["changed"] for r in rows)
    assert {r["label"] for r in rows} <= {"fresh", "rotten"}
    names = {f["metric"] for f in findings}
    assert "behaviour[one-typo]" in names, "one typo flips some of the TF-IDF decisions"
    assert "behaviour[negated-fresh]" in names, "negation barely moves a bag of words"

    gate = run("gate")
    assert gate.exit_code == 1, gate.output
    report = json.loads((text_ws / "gate-report.json").read_text())
    assert report["decision"]["status"] == "fail"
    html = next((text_ws / "reports").glob("*.html")).read_text()
    # The strings are shown escaped, with invisible and look-alike characters as escapes.
    shown = str(escape(visible_text(rows[0]["changed"])))
    assert "text-changes" in html and shown in html


def _jsonl_ws(text_ws: Path, folder: Path, rows: list[object]) -> Path:
    """The text workspace's model and config over a JSONL file of `rows`."""
    folder.mkdir()
    (folder / "tfidf.skops").write_bytes((text_ws / "tfidf.skops").read_bytes())
    config = (text_ws / "hardenml.toml").read_text()
    config = config.replace('source = "rotten_tomatoes"', 'source = "texts.jsonl"')
    config = config.replace("test_fraction = 0.2", "test_fraction = 0.5")
    before, _, _ = config.partition("# CheckList")
    (folder / "hardenml.toml").write_text(before)
    lines = [json.dumps(r) if not isinstance(r, str) else r for r in rows]
    (folder / "texts.jsonl").write_text("\n".join(lines) + "\n")
    return folder


GOOD = [{"text": t, "label": c} for t, c in [("A joy.", "fresh"), ("Dull.", "rotten")] * 4]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"text": 7, "label": "fresh"}, "not a string"),
        ({"text": "long " * 200, "label": "fresh"}, "more than model.input.shape"),
        ("{not json", "not JSON"),
    ],
)
def test_bad_text_rows_exit_2_with_a_message(text_ws: Path, tmp_path: Path, bad, message) -> None:
    folder = _jsonl_ws(text_ws, tmp_path / "ws", [*GOOD, bad])
    result = runner.invoke(app, ["scan", "--config", str(folder / "hardenml.toml")])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_empty_texts_scan_like_any_other(text_ws: Path, tmp_path: Path) -> None:
    rows = [*GOOD, {"text": "", "label": "fresh"}, {"text": "", "label": "rotten"}]
    folder = _jsonl_ws(text_ws, tmp_path / "ws", rows)
    result = runner.invoke(app, ["scan", "--config", str(folder / "hardenml.toml")])
    assert result.exit_code == 0, result.output
    assert "robust_accuracy[typos@1]" in result.output
