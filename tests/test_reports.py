"""JUnit, SARIF, HTML and model-card reports over a real scan and gate of the digits MLP."""

from __future__ import annotations

import base64
import copy
import dataclasses
import functools
import json
import re
import struct
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from torch import nn

from hardenml.config import parse_config
from hardenml.gate import GateDecision, decide
from hardenml.imaging import png_bytes
from hardenml.ledger import RunRecord
from hardenml.records import ModelReleased, fingerprint
from hardenml.report import (
    HTML_NAME,
    JUNIT_NAME,
    MODEL_CARD_NAME,
    SARIF_NAME,
    ReliabilityBin,
    baseline_run,
    bins_calibration_error,
    html_report,
    junit_report,
    model_card_section,
    reliability_diagram,
    sarif_report,
)
from hardenml.report.bundle import default_baseline
from hardenml.scan import proportion
from hardenml.scan.calibration import expected_calibration_error as scan_ece
from hardenml.workflow import GATE_REPORT_NAME
from test_reports_support import MODEL, OWNER, PROJECT, Gated, gated_workspace

SCHEMA_NAME = "sarif-schema-2.1.0.json"


@functools.cache
def sarif_schema() -> dict:
    repo_copy = Path(__file__).parents[2] / "shared" / "schemas" / SCHEMA_NAME
    path = repo_copy if repo_copy.is_file() else Path("/work/shared/schemas") / SCHEMA_NAME
    return json.loads(path.read_text())


def validate_sarif(log: dict) -> None:
    schema = sarif_schema()
    validator = jsonschema.validators.validator_for(schema)
    validator(schema).validate(log)


def test_the_sarif_schema_is_the_official_one() -> None:
    schema = sarif_schema()
    assert schema["id"].startswith("https://docs.oasis-open.org/sarif/sarif/v2.1.0/")
    jsonschema.validators.validator_for(schema).check_schema(schema)


def decode_png(blob: bytes) -> np.ndarray:
    """A minimal PNG reader (8-bit greyscale or RGB, filter type 0 only), independent of
    the encoder under test."""
    assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    idat = b""
    while pos < len(blob):
        (length,) = struct.unpack(">I", blob[pos : pos + 4])
        tag, data = blob[pos + 4 : pos + 8], blob[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", blob[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(tag + data) & 0xFFFFFFFF == crc
        if tag == b"IDAT":
            idat += data
        chunks[tag] = data
        pos += 12 + length
    width, height, depth, colour, *_ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert depth == 8 and colour in (0, 2) and b"IEND" in chunks
    channels = 1 if colour == 0 else 3
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, -1)
    assert (raw[:, 0] == 0).all()
    pixels = raw[:, 1:].reshape(height, width, channels)
    return pixels[..., 0] if channels == 1 else pixels


@pytest.fixture(scope="module")
def tabular(digits_mlp: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Gated:
    return gated_workspace(tmp_path_factory.mktemp("tabular"), digits_mlp)


@pytest.fixture(scope="module")
def image(digits_mlp: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Gated:
    return gated_workspace(tmp_path_factory.mktemp("image"), digits_mlp, shape="[1, 8, 8]")


def test_fixture_gate_has_a_passing_check_a_failing_one_and_a_blocking_finding(
    tabular: Gated,
) -> None:
    passed = [c.passed for c in tabular.decision.checks]
    assert passed == [True, False]
    assert len(tabular.decision.blocking_findings) == 1
    assert tabular.decision.blocking_findings[0].evidence


def test_gate_writes_every_report_into_the_reports_dir(tabular: Gated) -> None:
    for name in (JUNIT_NAME, SARIF_NAME, HTML_NAME, MODEL_CARD_NAME):
        assert (tabular.reports / name).stat().st_size > 200, name
    assert (tabular.ws.config.ledger_path.parent / GATE_REPORT_NAME).is_file()
    assert tabular.reports == tabular.ws.config.root / "reports"
    assert not list(tabular.reports.glob("*.tmp"))


def test_junit_has_one_case_per_check_and_the_finding_inside_its_check(tabular: Gated) -> None:
    decision = tabular.decision
    root = ET.parse(tabular.reports / JUNIT_NAME).getroot()
    assert root.tag == "testsuites" and root.get("name") == f"hardenml gate: {PROJECT}"
    # The blocking finding is the failed robustness check's: one problem, one case.
    policy, gate_suite = root.findall("testsuite")
    assert [c.get("name") for c in gate_suite.findall("testcase")] == [
        g.name for g in decision.extra_checks
    ]
    assert gate_suite.get("failures") == "0"
    cases = policy.findall("testcase")
    assert [c.get("name") for c in cases] == [c.name for c in decision.checks]
    assert cases[0].find("failure") is None and cases[0].find("system-out") is not None
    failure = cases[1].find("failure")
    assert failure is not None and failure.get("type") == "PolicyViolation"
    assert failure.get("message") == decision.reasons[0]
    f = decision.blocking_findings[0]
    assert f.finding_id in (failure.text or "") and OWNER in (failure.text or "")
    total = len(decision.checks) + len(decision.extra_checks)
    assert (root.get("tests"), root.get("failures")) == (str(total), "1")
    assert (policy.get("tests"), policy.get("failures")) == ("2", "1")
    props = {p.get("name"): p.get("value") for p in policy.iter("property")}
    assert props["model"] == MODEL and props["gate_status"] == "fail"


def _not_measured(gated: Gated) -> GateDecision:
    """The same run with its robust measurements dropped: the policy check is unmeasured."""
    payload = dict(gated.decision.run.payload)
    payload["measurements"] = [m for m in payload["measurements"] if m["threat"] is None]
    run = dataclasses.replace(gated.decision.run, payload=payload)
    return decide(gated.ws.config, run, {})


def test_junit_reports_an_unmeasured_check_as_a_failure(tabular: Gated) -> None:
    decision = _not_measured(tabular)
    root = ET.fromstring(junit_report(tabular.ws.config, decision))
    assert [s.get("name") for s in root.findall("testsuite")] == [
        "hardenml.policy",
        "hardenml.gate",
    ]
    failure = root.find("testsuite/testcase[2]/failure")
    assert failure is not None and failure.get("type") == "NotMeasured"
    assert "not measured" in (failure.get("message") or "")


def test_sarif_validates_against_the_oasis_schema_and_points_at_config_lines(
    tabular: Gated,
) -> None:
    log = json.loads((tabular.reports / SARIF_NAME).read_text())
    validate_sarif(log)
    (run,) = log["runs"]
    rules = run["tool"]["driver"]["rules"]
    (result,) = run["results"]
    f = tabular.decision.blocking_findings[0]
    assert (
        rules[result["ruleIndex"]]["id"]
        == result["ruleId"]
        == "hardenml/robust_accuracy/pgd-linf@0.1"
    )
    # Every check the gate ran has a rule, so a dashboard knows what passed as well.
    assert {r["id"] for r in rules} == {
        "hardenml/clean_accuracy",
        "hardenml/robust_accuracy/pgd-linf@0.1",
        "hardenml/gate/validation",
        "hardenml/gate/regression",
    }
    assert result["level"] == "error" and f.severity == "critical"
    assert rules[result["ruleIndex"]]["properties"]["security-severity"] == "9.5"
    assert result["partialFingerprints"]["hardenmlFinding/v1"] == f.fingerprint
    assert result["partialFingerprints"]["primaryLocationLineHash"] == f.fingerprint
    lines = tabular.ws.config.key_lines
    physical = result["locations"][0]["physicalLocation"]
    assert physical["artifactLocation"]["uri"] == "hardenml.toml"
    assert physical["region"]["startLine"] == lines["policy.robust[0]"]
    related = result["relatedLocations"][0]["physicalLocation"]["region"]["startLine"]
    assert related == lines["threats[0]"]
    text = (tabular.ws.config.root / "hardenml.toml").read_text().splitlines()
    assert text[physical["region"]["startLine"] - 1] == "[[policy.robust]]"
    assert text[related - 1] == "[[threats]]"
    assert result["properties"]["owner"] == OWNER
    assert result["attachments"][0]["artifactLocation"]["uri"] == f.evidence[0]["path"]
    assert run["artifacts"][0]["hashes"]["sha-256"] == tabular.decision.run.model_sha256
    assert run["invocations"][0]["exitCode"] == 1


@pytest.mark.parametrize(
    ("severity", "level"),
    [("critical", "error"), ("high", "error"), ("medium", "warning"), ("low", "note")],
)
def test_sarif_level_follows_the_severity_of_a_finding_that_does_not_fail_the_gate(
    tabular: Gated, severity: str, level: str
) -> None:
    # A finding at a budget the policy sets no threshold for, of a severity the gate lets
    # through: only its severity decides its level.
    f = tabular.decision.blocking_findings[0]
    fp = fingerprint(f.model, f.threat, f.metric, 0.02)
    aside = dataclasses.replace(
        f, severity=severity, budget=0.02, fingerprint=fp, finding_id=f"HML-{fp[:8]}"
    )
    log = sarif_report(tabular.ws.config, tabular.decision, [aside])
    validate_sarif(log)
    levels = {r["ruleId"]: r["level"] for r in log["runs"][0]["results"]}
    assert levels["hardenml/robust_accuracy/pgd-linf@0.02"] == level
    # The failed check at 0.1 has no finding in this list: its own result is an error.
    assert levels["hardenml/robust_accuracy/pgd-linf@0.1"] == "error"


def test_sarif_lists_an_unmeasured_check_without_a_finding(tabular: Gated) -> None:
    log = sarif_report(tabular.ws.config, _not_measured(tabular), {})
    validate_sarif(log)
    (result,) = log["runs"][0]["results"]
    assert result["level"] == "error" and "not measured" in result["message"]["text"]
    line = result["locations"][0]["physicalLocation"]["region"]["startLine"]
    assert line == tabular.ws.config.key_lines["policy.robust[0]"]


def test_html_renders_hostile_names_as_text(tabular: Gated) -> None:
    page = (tabular.reports / HTML_NAME).read_text()
    for hostile in (PROJECT, OWNER, MODEL):
        assert hostile not in page
    lowered = page.lower()
    assert "<script" not in lowered and "<img src=x" not in lowered and "<svg onload" not in lowered
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "digits-mlp&quot;&gt;&lt;svg onload=alert(3)&gt;" in page


def test_html_is_self_contained(tabular: Gated) -> None:
    page = (tabular.reports / HTML_NAME).read_text()
    refs = re.findall(r"""\b(?:src|href)\s*=\s*["']([^"']*)""", page, flags=re.I)
    assert refs and all(r.startswith("data:") for r in refs)
    assert not re.search(r"https?:|url\(|@import|<link(?![^>]*data:)", page, flags=re.I)
    # One robustness curve, and a reliability diagram per calibration the scan recorded.
    recorded = tabular.decision.run.payload["calibration"]
    budgets = tabular.ws.config.threats[0].budgets
    assert set(recorded) == {"clean"} | {f"pgd-linf@{b:g}" for b in budgets}
    assert page.count('<svg class="plot"') == 1 + len(recorded)
    assert 'data-plot="robust-0"' in page


def test_html_lists_the_largest_feature_changes_of_tabular_evidence(tabular: Gated) -> None:
    f = tabular.decision.blocking_findings[0]
    with np.load(tabular.ws.config.root / f.evidence[0]["path"]) as npz:
        x, x_adv, y, pred = npz["x"], npz["x_adv"], npz["y"], npz["pred"]
    page = (tabular.reports / HTML_NAME).read_text()
    table = page[page.index('<table class="feature-changes">') :]
    table = table[: table.index("</table>")]
    rows = table.split("<tr>")[2:]
    assert len(rows) == min(8, len(y))
    for i, row in enumerate(rows):
        delta = x_adv[i] - x[i]
        top = int(np.argmax(np.abs(delta)))
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
        assert cells[1] == str(int(y[i])) and cells[2] == str(int(pred[i]))
        assert cells[4].startswith(f"<code>x[{top}]</code>")
        assert float(cells[3]) == pytest.approx(np.abs(delta).max(), rel=1e-3)


def test_html_shows_image_evidence_as_inline_png_thumbnails(image: Gated) -> None:
    f = image.decision.blocking_findings[0]
    with np.load(image.ws.config.root / f.evidence[0]["path"]) as npz:
        x, x_adv = npz["x"], npz["x_adv"]
    assert x.shape[1:] == (1, 8, 8)
    page = (image.reports / HTML_NAME).read_text()
    uris = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert len(uris) == 3 * min(8, len(x))
    original, adversarial, change = (decode_png(base64.b64decode(u)) for u in uris[:3])
    # 8x8 inputs are enlarged 8 times by whole pixels, so nothing is interpolated.
    expected = np.kron(np.rint(np.clip(x[0, 0].astype(np.float64), 0, 1) * 255), np.ones((8, 8)))
    assert original.shape == (64, 64)
    np.testing.assert_array_equal(original, expected.astype(np.uint8))
    expected_adv = np.kron(
        np.rint(np.clip(x_adv[0, 0].astype(np.float64), 0, 1) * 255), np.ones((8, 8))
    )
    np.testing.assert_array_equal(adversarial, expected_adv.astype(np.uint8))
    # The change picture: grey for none, white for the largest absolute change upwards.
    delta = x_adv[0, 0].astype(np.float64) - x[0, 0].astype(np.float64)
    expected_change = np.rint(127.5 + 127.5 * delta / np.abs(delta).max())
    np.testing.assert_array_equal(change, np.kron(expected_change, np.ones((8, 8))))
    assert change.max() == 255 or change.min() == 0
    assert 'class="feature-changes"' not in page


def test_png_encoder_round_trips_rgb() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_png(png_bytes(pixels)), pixels)
    with pytest.raises(ValueError, match="uint8"):
        png_bytes(pixels.astype(np.float32))


def test_html_refuses_evidence_whose_hash_changed(tabular: Gated) -> None:
    f = tabular.decision.blocking_findings[0]
    evidence = [{**f.evidence[0], "sha256": "0" * 64}]
    changed = dataclasses.replace(f, evidence=evidence)
    page = html_report(tabular.ws.config, tabular.decision, [changed])
    assert "changed since the ledger recorded it" in page
    assert 'class="feature-changes"' not in page
    missing = dataclasses.replace(f, evidence=[{**f.evidence[0], "path": "gone.npz"}])
    assert "cannot read the file" in html_report(tabular.ws.config, tabular.decision, [missing])


def test_calibration_error_from_bins_matches_the_scan_and_hand() -> None:
    probs = np.array(
        [[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [1.0, 0.0], [0.55, 0.45]], dtype=np.float64
    )
    y = np.array([0, 1, 1, 0, 1])
    bins = reliability_diagram(probs, y, n_bins=10)
    by_hand = sum(b.count * abs(b.accuracy - b.confidence) for b in bins if b.count) / 5
    assert bins_calibration_error(bins) == pytest.approx(by_hand)
    assert bins_calibration_error(bins) == pytest.approx(scan_ece(probs, y, n_bins=10))
    assert np.isnan(bins_calibration_error([]))


def test_reliability_is_not_measured_unless_given(tabular: Gated) -> None:
    config, decision = tabular.ws.config, tabular.decision
    page = (tabular.reports / HTML_NAME).read_text()
    # The scan records reliability bins, clean and under each threat: they are drawn.
    assert 'data-plot="reliability-0"' in page
    bare_payload = {k: v for k, v in decision.run.payload.items() if k != "calibration"}
    bare = dataclasses.replace(
        decision, run=dataclasses.replace(decision.run, payload=bare_payload)
    )
    assert 'id="reliability">Not measured' in html_report(config, bare, tabular.findings)
    assert "Not measured: the run recorded no reliability data." in model_card_section(
        config, bare, tabular.findings
    )
    decision = bare
    bins = [ReliabilityBin(0.0, 0.5, 0.4, 0.25, 4), ReliabilityBin(0.5, 1.0, 0.8, 0.75, 4)]
    drawn = html_report(config, decision, tabular.findings, reliability={"<test>": bins})
    assert 'data-plot="reliability-0"' in drawn and "ECE 0.100" in drawn
    assert "&lt;test&gt;" in drawn and "<test>" not in drawn
    payload = {**decision.run.payload, "reliability": {"test": [b.as_dict() for b in bins]}}
    recorded = dataclasses.replace(decision, run=dataclasses.replace(decision.run, payload=payload))
    card = model_card_section(config, recorded, tabular.findings)
    assert "| test | 0.100 | 8 |" in card
    summary = {
        **decision.run.payload,
        "calibration": {"ece": 0.1, "bins": [b.as_dict() for b in bins]},
    }
    run = dataclasses.replace(decision.run, payload=summary)
    card = model_card_section(config, dataclasses.replace(decision, run=run))
    assert "| evaluation data | 0.100 | 8 |" in card


CORRUPTION_CONFIG = """\
version = 1
[project]
name = "corruptions"
[model]
name = "m"
kind = "sklearn"
path = "m.skops"
classes = ["a", "b"]
[model.input]
shape = [1, 8, 8]
[data]
source = "digits"
[[threats]]
name = "pgd"
attack = "pgd"
budgets = [0.1]
[[threats]]
name = "noise"
attack = "gaussian-noise"
budgets = [1, 2, 3]
"""


def test_corruption_measurements_get_their_own_curves(tmp_path: Path) -> None:
    config = parse_config(CORRUPTION_CONFIG, root=tmp_path)
    ms = [proportion("clean_accuracy", 90, 100, confidence=0.95, seed=0)]
    ms.append(
        proportion("robust_accuracy", 40, 100, threat="pgd", budget=0.1, confidence=0.95, seed=0)
    )
    for severity, hits in ((1, 80), (2, 70), (3, 50)):
        ms.append(
            proportion(
                "robust_accuracy",
                hits,
                100,
                threat="noise",
                budget=severity,
                confidence=0.95,
                seed=0,
            )
        )
    payload = {
        "run_id": "r1", "model": "m", "model_sha256": "a" * 64, "data_sha256": "b" * 64,
        "seed": 0, "n": 100, "started": "2026-01-01T00:00:00+00:00",
        "finished": "2026-01-01T00:00:01+00:00", "measurements": [m.as_dict() for m in ms],
    }  # fmt: skip
    decision = decide(config, RunRecord("r1", "m", "a" * 64, payload, 1), {})
    page = html_report(config, decision)
    corr = page[page.index('id="corruption-curves"') : page.index("<h2>Calibration")]
    assert 'data-plot="corruption-' in corr and corr.count("<circle") == 4
    robust = page[page.index('id="robust-curves"') : page.index("<h2>Corruptions")]
    assert robust.count('<svg class="plot"') == 1 and robust.count("<circle") == 2
    card = model_card_section(config, decision)
    section = card[card.index("### Corruptions") : card.index("### Calibration")]
    assert "| noise | 3 | 0.500 |" in section and "| noise | 0 | 0.900 |" in section
    assert "pgd" not in section


def test_model_card_section(tabular: Gated) -> None:
    card = (tabular.reports / MODEL_CARD_NAME).read_text()
    f = tabular.decision.blocking_findings[0]
    front, _, card = card.removeprefix("---\n").partition("\n---\n\n")
    assert "model-index:" in front and card.startswith("## Robustness\n")
    assert "**Release gate: FAIL** (exit code 1" in card
    value = tabular.decision.checks[1].measurement.value  # type: ignore[union-attr]
    assert f"| robust\\_accuracy\\[pgd-linf@0.1\\] | {value:.3f} |" in card
    assert card.count("**FAIL** |") == 1
    assert f"| `{f.finding_id}` | critical | yes |" in card
    for hostile in (PROJECT, OWNER, MODEL):
        assert hostile not in card
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in card
    assert "Not measured: the run has no corruption threats." in card
    rows = [line for line in card.splitlines() if line.startswith("| pgd-linf |")]
    assert [r.split(" | ")[1] for r in rows] == ["0", "0.02", "0.05", "0.1"]


def test_baseline_is_the_previous_model_and_is_drawn_beside_the_candidate(
    digits_mlp: nn.Module, tmp_path: Path
) -> None:
    first = gated_workspace(tmp_path, digits_mlp)
    weaker = copy.deepcopy(digits_mlp)
    with torch.no_grad():
        weaker[3].weight.mul_(0.5)
    second = gated_workspace(tmp_path, weaker)
    assert second.decision.run.run_id != first.decision.run.run_id
    before = baseline_run(second.ws.ledger.events(), second.decision.run)
    assert before is not None and before["run_id"] == first.decision.run.run_id
    assert baseline_run(first.ws.ledger.events(), first.decision.run) is None
    page = (second.reports / HTML_NAME).read_text()
    assert 'data-series="baseline"' in page and "<th>Baseline</th>" in page
    card = (second.reports / MODEL_CARD_NAME).read_text()
    assert f"run `{first.decision.run.run_id}`" in card


def _regressed(gated: Gated) -> GateDecision:
    """The same run judged against a released model that was better on every metric."""
    run = gated.decision.run
    better = [{**m, "value": min(1.0, m["value"] + 0.2)} for m in run.payload["measurements"]]
    released = ModelReleased(
        model=run.model,
        model_sha256="f" * 64,
        path="released.pt",
        gate_seq=1,
        forced=False,
        run_id="released-run",
        data_sha256=run.payload["data_sha256"],
        measurements=better,
    )
    return decide(gated.ws.config, run, gated.findings, released=released)


def test_failed_gate_checks_reach_junit_sarif_html_and_the_card(tabular: Gated) -> None:
    config, decision = tabular.ws.config, _regressed(tabular)
    failed = [g for g in decision.extra_checks if not g.passed]
    assert failed and all(g.name.startswith("regression[") for g in failed)
    root = ET.fromstring(junit_report(config, decision))
    gate_suite = root.find("testsuite[@name='hardenml.gate']")
    assert gate_suite is not None and gate_suite.get("failures") == str(len(failed))
    messages = [f.get("message") for f in gate_suite.iter("failure")]
    assert messages == [f"{g.name}: {g.reason}" for g in failed]
    log = sarif_report(config, decision, tabular.findings)
    validate_sarif(log)
    gate_results = [
        r for r in log["runs"][0]["results"] if r["ruleId"] == "hardenml/gate/regression"
    ]
    assert len(gate_results) == len(failed)
    page = html_report(
        config, decision, tabular.findings, baseline=default_baseline(decision, None)
    )
    body = page[page.index("</header>") :]
    assert body.count('<td class="bad">FAIL</td>') == 1 + len(failed)
    summary = page[page.index('<section id="summary">') : page.index("</section>")]
    assert summary.count('<td class="bad">FAIL</td>') == 1 + len(failed)
    assert 'data-series="baseline"' in page and "released-run" in page
    card = model_card_section(config, decision, tabular.findings)
    assert card.count("**FAIL** |") == 1 + len(failed)
