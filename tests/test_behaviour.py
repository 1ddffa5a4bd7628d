"""Behavioural suites (CheckList): config errors, known answers on real small models, the
scan's `behaviour[NAME]` checks and findings, and the validator's check."""

from __future__ import annotations

import copy
import json
import re
import xml.etree.ElementTree as ET
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn
from typer.testing import CliRunner

from conftest import DIGITS_CLASSES, linear_module
from hardenml import workflow
from hardenml.cli import app
from hardenml.config import (
    BehaviourSuite,
    ConfigError,
    HardenConfig,
    parse_config,
)
from hardenml.data import Dataset, load_source, split
from hardenml.ledger import Ledger, findings_state
from hardenml.report import JUNIT_NAME, SARIF_NAME
from hardenml.report.html_report import html_report
from hardenml.scan.behaviour import BehaviourError, SuiteResult, preflight, run_suite, run_suites
from hardenml.stats import wilson_interval
from hardenml.targets import InputSpec, SklearnTarget, TorchTarget
from hardenml.threats import available_threats, threat_class
from hardenml.threats.base import Threat
from hardenml.validate import Outcomes, compare
from workspace import write_workspace

CANCER = ["malignant", "benign"]
CANCER_BOUNDS = (0.0, 5000.0)  # raw breast-cancer features: the largest is under 4,300

runner = CliRunner()


def suite(**keys: Any) -> BehaviourSuite:
    """A suite from its TOML keys (`klass` stands for `class`)."""
    if "klass" in keys:
        keys["class"] = keys.pop("klass")
    return BehaviourSuite.model_validate(keys)


def run(
    s: BehaviourSuite,
    target: Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    classes: list[str] = CANCER,
    names: list[str] | None = None,
    seed: int = 0,
) -> SuiteResult:
    return run_suite(
        s,
        target,
        torch.from_numpy(x),
        torch.from_numpy(y),
        classes=classes,
        feature_names=names,
        confidence=0.95,
        seed=seed,
    )


@pytest.fixture(scope="module")
def cancer() -> tuple[Dataset, Dataset]:
    """The same stratified split `data.source = "breast_cancer"` gives (seed 0, 20% test)."""
    return split(load_source("breast_cancer"), test_fraction=0.2, seed=0)


@pytest.fixture(scope="module")
def cancer_lr(cancer: tuple[Dataset, Dataset]) -> Pipeline:
    train, _ = cancer
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(train.x, train.y)


def cancer_target(clf: Any) -> SklearnTarget:
    return SklearnTarget(
        clf, input_spec=InputSpec(shape=(30,), bounds=CANCER_BOUNDS), classes=CANCER
    )


def raw_weights(clf: Pipeline) -> np.ndarray:
    """The logistic regression's weight on each raw feature for class 1 ("benign")."""
    return clf[-1].coef_[0] / clf[0].scale_


# --- config ----------------------------------------------------------------------------

BASE = """
version = 1
[project]
name = "t"
[model]
name = "m"
kind = "sklearn"
path = "m.skops"
classes = ["malignant", "benign"]
[model.input]
shape = [30]
[data]
source = "breast_cancer"
"""


@pytest.mark.parametrize(
    ("body", "key", "says"),
    [
        ('kind = "monotone"', "behaviour[0].kind", "'invariance', 'directional' or 'minimum'"),
        (
            'kind = "directional"\nchange = 1.0\nclass = "benign"\nexpect = "increase"',
            "behaviour[0].feature",
            "a 'directional' suite needs feature",
        ),
        (
            'kind = "minimum"\nclass = "cat"\nmin_accuracy = 0.5',
            "behaviour[0].class",
            "one of ['malignant', 'benign']",
        ),
        (
            'kind = "directional"\nfeature = 0\nchange = 1.0\nclass = "dog"\nexpect = "increase"',
            "behaviour[0].class",
            "a class name from model.classes",
        ),
        ('kind = "invariance"\ntransform = "swirl"', "behaviour[0].transform", "feature-noise"),
        ('kind = "invariance"', "behaviour[0].transform", "needs a transform"),
        ('kind = "minimum"', "behaviour[0].min_accuracy", "needs min_accuracy"),
        (
            'kind = "minimum"\nmin_accuracy = 0.5\nfeature = 3',
            "behaviour[0].feature",
            "no 'feature' in a 'minimum' suite",
        ),
        ('kind = "minimum"\nmin_accuracy = 0.5\ncolour = 3', "behaviour[0].colour", "no such key"),
        (
            'kind = "invariance"\ntransform = "feature-noise"\nfeatures = [0]',
            "behaviour[0].noise",
            "feature-noise needs features",
        ),
        (
            'kind = "invariance"\ntransform = "shift"\nnoise = 0.1',
            "behaviour[0].noise",
            "only transform = 'feature-noise'",
        ),
        ('kind = "invariance"\ntransform = "shift"\nseverity = 6', "behaviour[0].severity", "5"),
        (
            'kind = "directional"\nfeature = 0\nchange = 0.0\nclass = "benign"\n'
            'expect = "increase"',
            "behaviour[0].change",
            "non-zero",
        ),
        (
            'kind = "directional"\nfeature = 0\nchange = 1.0\nclass = "benign"\n'
            'expect = "increase"\ntolerance = 0.1',
            "behaviour[0].tolerance",
            "no tolerance",
        ),
    ],
)
def test_config_errors_name_the_key(body: str, key: str, says: str) -> None:
    text = BASE + f'\n[[behaviour]]\nname = "x"\n{body}\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(text, root=Path("."))
    message = str(caught.value)
    assert re.search(rf"  - {re.escape(key)} \(line \d+\)", message), message
    assert says in message


def test_duplicate_names_and_good_suites() -> None:
    one = '\n[[behaviour]]\nname = "x"\nkind = "minimum"\nmin_accuracy = 0.5\n'
    with pytest.raises(ConfigError, match=r"behaviour\[1\]\.name .*unique"):
        parse_config(BASE + one + one, root=Path("."))
    config = parse_config(
        BASE
        + """
[[behaviour]]
name = "noise"
kind = "invariance"
transform = "Gaussian_Noise"
severity = 3

[[behaviour]]
name = "radius-up"
kind = "directional"
feature = "mean radius"
change = 1.5
class = "benign"
expect = "not_decrease"
tolerance = 0.02
max_failure_rate = 0.1
""",
        root=Path("."),
    )
    noise, radius = config.behaviour
    assert noise.transform == "gaussian-noise" and noise.threshold == 0.95
    assert noise.check_name == "behaviour[noise]"
    assert radius.class_ == "benign" and radius.threshold == 0.9
    # Written back under its TOML name, so the run's config snapshot reads like the file.
    assert config.model_dump(mode="json")["behaviour"][1]["class"] == "benign"


CORRUPTION_TRANSFORMS = [n for n in available_threats() if threat_class(n).family == "corruption"]


def test_the_transforms_are_the_registered_corruptions() -> None:
    assert {"gaussian-noise", "blur", "jpeg", "rotate"} <= set(CORRUPTION_TRANSFORMS)
    for name in CORRUPTION_TRANSFORMS:
        cls = threat_class(name)
        assert issubclass(cls, Threat) and cls.norm == "none" and not cls.needs_gradients


def test_the_templates_examples_parse(tmp_path: Path) -> None:
    text = files("hardenml").joinpath("templates/hardenml.toml").read_text()
    start = text.index("# [[behaviour]]")
    end = text.index("[owners]")
    examples = "\n".join(line.removeprefix("# ") for line in text[start:end].splitlines())
    text = text[:start] + examples + "\n" + text[end:]
    # The directional example is for a tabular model: give the classes it names.
    text = re.sub(r"classes = \[.*\]", 'classes = ["malignant", "3", "benign"]', text, count=1)
    config = parse_config(text, root=tmp_path)
    assert [s.kind for s in config.behaviour] == ["invariance", "directional", "minimum"]


def test_data_problems_are_config_errors_before_any_work() -> None:
    config = parse_config(
        BASE
        + """
[[behaviour]]
name = "typo"
kind = "directional"
feature = "mean radiuss"
change = 1.0
class = "benign"
expect = "increase"

[[behaviour]]
name = "rot"
kind = "invariance"
transform = "rotation"
""",
        root=Path("."),
    )
    with pytest.raises(ConfigError) as caught:
        preflight(config, (30,), ["mean radius", "mean texture"])
    message = str(caught.value)
    assert "behaviour[0].feature (line" in message and "'mean radiuss'" in message
    assert "behaviour[1].transform (line" in message and "needs images" in message
    preflight(
        config.model_copy(update={"behaviour": config.behaviour[:1]}), (30,), ["mean radiuss"]
    )


# --- known answers ---------------------------------------------------------------------


def test_directional_known_answers_on_logistic_regression(
    cancer: tuple[Dataset, Dataset], cancer_lr: Pipeline
) -> None:
    _, test = cancer
    names = list(test.provenance["feature_names"])
    target = cancer_target(cancer_lr)
    w = raw_weights(cancer_lr)
    up, down = int(np.argmax(w)), int(np.argmin(w))
    assert w[up] > 0 > w[down]
    step = float(cancer_lr[0].scale_[up])  # one standard deviation of the feature

    def rate(feature: int | str, klass: str, expect: str, change: float = step) -> SuiteResult:
        s = suite(
            name="d", kind="directional", feature=feature, change=change, klass=klass, expect=expect
        )
        return run(s, target, test.x, test.y, names=names)

    # A positive weight: P(benign) rises with the feature for every sample, P(malignant) falls.
    ok = rate(names[up], "benign", "increase")
    assert ok.n == len(test) and ok.failures == 0 and ok.passed
    assert ok.failure_ci == wilson_interval(0, len(test), 0.95)
    wrong = rate(names[up], "benign", "decrease")
    assert wrong.failures == wrong.n == len(test) and not wrong.passed
    assert rate(names[up], "malignant", "increase").failures == len(test)
    assert rate(names[up], "benign", "not_decrease").passed
    assert not rate(names[up], "benign", "not_increase").passed
    # Lowering the feature, or a negative weight, turns the answers round.
    assert rate(names[up], "benign", "decrease", change=-step).passed
    assert rate(down, "benign", "decrease", change=float(cancer_lr[0].scale_[down])).passed
    # By index or by name: the same column, the same numbers.
    assert rate(up, "benign", "decrease").as_dict() | {"feature": 0} == wrong.as_dict() | {
        "feature": 0
    }
    d = wrong.as_dict()
    assert d["failure_rate"] == 1.0 and d["max_failure_rate"] == 0.05 and not d["passed"]
    assert d["expect"] == "decrease" and d["class"] == "benign"


def test_directional_counts_only_samples_the_change_moves() -> None:
    # Logits [0, x0]: P(class 1) rises with feature 0; feature 1 is ignored.
    target = TorchTarget(
        linear_module(np.array([1.0, 0.0]), 0.0),
        input_spec=InputSpec(shape=(2,)),
        classes=["a", "b"],
        device="cpu",
    )
    x = np.array([[0.5, 0.0], [1.0, 0.0], [0.2, 0.3]], dtype=np.float32)
    y = np.array([1, 1, 0])
    up = suite(name="u", kind="directional", feature=0, change=0.3, klass="b", expect="increase")
    result = run(up, target, x, y, classes=["a", "b"])
    assert (result.n, result.failures) == (2, 0)  # the sample at the bound 1.0 tests nothing
    # A feature the model ignores moves nothing: strict "increase" fails, "not_decrease" holds.
    flat = suite(name="f", kind="directional", feature=1, change=0.5, klass="b", expect="increase")
    assert run(flat, target, x, y, classes=["a", "b"]).failures == 3
    held = flat.model_copy(update={"expect": "not_decrease"})
    assert run(held, target, x, y, classes=["a", "b"]).failures == 0
    stuck = suite(name="s", kind="directional", feature=0, change=0.5, klass="b", expect="increase")
    with pytest.raises(BehaviourError, match="at the input bound"):
        run(stuck, target, x[1:2], y[1:2], classes=["a", "b"])


def test_minimum_functionality_is_the_accuracy_on_the_class(
    cancer: tuple[Dataset, Dataset], cancer_lr: Pipeline
) -> None:
    _, test = cancer
    target = cancer_target(cancer_lr)
    pred = cancer_lr.predict(test.x.astype(np.float64))
    malignant = test.y == 0
    accuracy = float((pred[malignant] == 0).mean())
    exact = suite(name="m", kind="minimum", klass="malignant", min_accuracy=accuracy)
    result = run(exact, target, test.x, test.y)
    assert result.n == int(malignant.sum()) and result.pass_rate == pytest.approx(accuracy)
    assert result.passed
    d = result.as_dict()
    assert d["accuracy"] == pytest.approx(accuracy) and d["min_accuracy"] == accuracy
    lo, hi = wilson_interval(result.n - result.failures, result.n, 0.95)
    assert d["accuracy_ci"] == pytest.approx([lo, hi])
    stricter = exact.model_copy(update={"min_accuracy": accuracy + 0.01})
    assert not run(stricter, target, test.x, test.y).passed
    everyone = suite(name="all", kind="minimum", min_accuracy=0.5)
    overall = run(everyone, target, test.x, test.y)
    assert overall.n == len(test) and overall.pass_rate == pytest.approx((pred == test.y).mean())


class Constant(nn.Module):
    """Ignores its input: invariant to every transform by construction."""

    def __init__(self) -> None:
        super().__init__()
        self.scores = nn.Parameter(torch.linspace(0, 1, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores.expand(x.shape[0], -1) + 0 * x.flatten(1).sum(1, keepdim=True)


def image_digits(n: int) -> tuple[np.ndarray, np.ndarray]:
    _, test = split(load_source("digits"), test_fraction=0.25, seed=0)
    return test.x[:n].reshape(-1, 1, 8, 8), test.y[:n]


def test_a_model_invariant_by_construction_passes_every_corruption() -> None:
    x, y = image_digits(60)
    target = TorchTarget(
        Constant(), input_spec=InputSpec(shape=(1, 8, 8)), classes=DIGITS_CLASSES, device="cpu"
    )
    for transform in CORRUPTION_TRANSFORMS:
        s = suite(name="i", kind="invariance", transform=transform, severity=5)
        result = run(s, target, x, y, classes=DIGITS_CLASSES)
        assert (result.n, result.failures, result.passed) == (60, 0, True), transform


def test_invariance_of_a_trained_mlp_is_seeded(digits_mlp: nn.Module) -> None:
    x, y = image_digits(300)
    target = TorchTarget(
        digits_mlp, input_spec=InputSpec(shape=(1, 8, 8)), classes=DIGITS_CLASSES, device="cpu"
    )
    strong = suite(name="shift", kind="invariance", transform="shift", severity=5)
    first = run(strong, target, x, y, classes=DIGITS_CLASSES, seed=7)
    again = run(strong, target, x, y, classes=DIGITS_CLASSES, seed=7)
    assert first.as_dict() == again.as_dict()
    np.testing.assert_array_equal(first.examples["x_changed"], again.examples["x_changed"])
    # A shift by 15% of an 8-pixel digit moves it more than a pixel: many predictions change.
    assert first.failure_rate > 0.2 and not first.passed
    # The failing examples really changed class and stay inside the input bounds.
    ex = first.examples
    assert len(ex["y"]) == 32 and ex["x_changed"].min() >= 0 and ex["x_changed"].max() <= 1
    before = target.predict(torch.from_numpy(ex["x"])).numpy()
    np.testing.assert_array_equal(target.predict(torch.from_numpy(ex["x_changed"])), ex["pred"])
    assert (before != ex["pred"]).all()
    mild = suite(name="b", kind="invariance", transform="brightness", max_failure_rate=0.5)
    assert run(mild, target, x, y, classes=DIGITS_CLASSES, seed=7).passed


def test_feature_noise_touches_only_the_named_features() -> None:
    w = np.zeros(6)
    w[4:] = [4.0, -4.0]
    target = TorchTarget(
        linear_module(w, 0.0), input_spec=InputSpec(shape=(6,)), classes=["a", "b"], device="cpu"
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(0.3, 0.7, size=(200, 6)).astype(np.float32)
    y = (x @ w > 0).astype(np.int64)
    names = [f"f{i}" for i in range(6)]
    ignored = suite(
        name="n", kind="invariance", transform="feature-noise", features=[0, "f1", 2], noise=0.3
    )
    assert run(ignored, target, x, y, classes=["a", "b"], names=names).failures == 0
    used = ignored.model_copy(update={"features": ["f4"], "noise": 0.2})
    result = run(used, target, x, y, classes=["a", "b"], names=names)
    assert 0 < result.failures < result.n
    delta = result.examples["x_changed"] - result.examples["x"]
    assert np.abs(delta[:, [0, 1, 2, 3, 5]]).max() == 0
    assert 0 < np.abs(delta[:, 4]).max() <= 0.2 + 1e-6


# --- the scan and the gate -------------------------------------------------------------

SUITES = """
[[behaviour]]
name = "noise-stable"
kind = "invariance"
transform = "gaussian-noise"
severity = 1
max_failure_rate = 0.5

[[behaviour]]
name = "all-right"
kind = "minimum"
min_accuracy = {floor}
"""


def test_a_failing_suite_is_a_finding_and_fails_the_gate(
    tmp_path: Path, digits_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_workspace(tmp_path / "ws", digits_weights, min_clean=0.5, min_robust=0.0)
    base = config.read_text()
    config.write_text(base + SUITES.format(floor=1.0))
    monkeypatch.chdir(config.parent)

    gate = runner.invoke(app, ["gate"], catch_exceptions=False)
    assert gate.exit_code == 1, gate.output
    report = json.loads((config.parent / "gate-report.json").read_text())
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["behaviour[noise-stable]"]["passed"]
    failed = checks["behaviour[all-right]"]
    assert not failed["passed"] and failed["threshold"] == 1.0 and failed["n"] == 120
    assert [c["name"] for c in report["checks"] if not c["passed"]] == ["behaviour[all-right]"]
    assert any(
        r.startswith("behaviour[all-right]: accuracy") for r in report["decision"]["reasons"]
    )
    assert [s["name"] for s in report["behaviour"]] == ["noise-stable", "all-right"]

    ledger = Ledger(config.parent / "hardenml.db")
    (run_event,) = ledger.events(["run.completed"])
    suites = {s["name"]: s for s in run_event.payload["behaviour"]}
    right = suites["all-right"]
    assert right["n"] == 120 and right["failures"] > 0 and not right["passed"]
    assert right["accuracy"] == pytest.approx(failed["value"])
    assert (
        suites["noise-stable"]["passed"] and suites["noise-stable"]["transform"] == "gaussian-noise"
    )
    (finding,) = [f for f in findings_state(ledger.events()).values() if f.metric.startswith("beh")]
    assert finding.metric == "behaviour[all-right]" and finding.threat is None
    assert finding.status == "open" and finding.owner == "ml-platform"
    assert finding.title.startswith("Behavioural suite 'all-right': accuracy on all inputs")
    cfg = workflow.Workspace.open(config).config
    assert finding.severity == cfg.policy.severity.classify(1.0 - right["accuracy"])
    (evidence,) = finding.evidence
    with np.load(config.parent / evidence["path"]) as npz:
        assert len(npz["y"]) == evidence["count"] == min(32, right["failures"])
        assert (npz["pred"] != npz["y"]).all()

    # The reports take the check through the policy path.
    reports = config.parent / "reports"
    junit = ET.parse(reports / JUNIT_NAME).getroot()
    case = next(c for c in junit.iter("testcase") if c.get("name") == "behaviour[all-right]")
    assert case.find("failure") is not None
    sarif = json.loads((reports / SARIF_NAME).read_text())
    rules = {r["id"]: r for r in sarif["runs"][0]["tool"]["driver"]["rules"]}
    assert (
        "Behavioural suite all-right"
        in rules["hardenml/behaviour[all-right]"]["shortDescription"]["text"]
    )
    located = [
        r for r in sarif["runs"][0]["results"] if r["ruleId"] == "hardenml/behaviour[all-right]"
    ]
    region = located[0]["locations"][0]["physicalLocation"]["region"]
    lines = config.read_text().splitlines()
    assert lines[region["startLine"] - 1] == "[[behaviour]]"
    assert 'name = "all-right"' in lines[region["startLine"]]
    html = (reports / "report.html").read_text()
    table = html[html.index('<table id="behaviour">') :]
    assert "all-right" in table and "gaussian-noise at severity 1" in table

    # A reachable floor: the rescan finds the suite passing and the finding fixed.
    config.write_text(base + SUITES.format(floor=0.5))
    again = runner.invoke(app, ["gate"], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    state = findings_state(ledger.events())
    assert state[finding.finding_id].status == "fixed"


def test_html_escapes_the_behaviour_table(tmp_path: Path) -> None:
    from hardenml.gate import decide
    from hardenml.ledger import RunRecord

    config = parse_config(BASE, root=tmp_path)
    payload = {
        "run_id": "r",
        "model": "m",
        "model_sha256": "s",
        "data_sha256": "d",
        "measurements": [],
        "behaviour": [
            {
                "name": "<b>x</b>",
                "kind": "directional",
                "feature": "<script>alert(1)</script>",
                "change": 1.0,
                "class": "benign",
                "expect": "increase",
                "n": 3,
                "failures": 1,
                "failure_rate": 1 / 3,
                "failure_rate_ci": [0.06, 0.79],
                "max_failure_rate": 0.05,
                "passed": False,
            }
        ],
    }
    page = html_report(config, decide(config, RunRecord("r", "m", "s", payload, 1), {}))
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page


# --- the validator ---------------------------------------------------------------------

VALIDATE_CONFIG = """
version = 1
[project]
name = "cancer"
[model]
name = "cancer-lr"
kind = "sklearn"
path = "baseline.skops"
classes = ["malignant", "benign"]
[model.input]
shape = [30]
bounds = [0.0, 5000.0]
[data]
source = "breast_cancer"
seed = 0
[policy]
min_clean_accuracy = 0.5

[[behaviour]]
name = "up"
kind = "directional"
feature = "{feature}"
change = {change}
class = "benign"
expect = "increase"

[[behaviour]]
name = "malignant-found"
kind = "minimum"
class = "malignant"
min_accuracy = 0.5
"""


def test_validator_requires_every_suite_on_the_candidate(
    tmp_path: Path, cancer: tuple[Dataset, Dataset], cancer_lr: Pipeline
) -> None:
    _, test = cancer
    names = list(test.provenance["feature_names"])
    j = int(np.argmax(raw_weights(cancer_lr)))
    # The candidate is the same model with the sign of one weight flipped.
    flipped = copy.deepcopy(cancer_lr)
    flipped[-1].coef_[0, j] *= -1
    sio.dump(cancer_lr, tmp_path / "baseline.skops")
    sio.dump(flipped, tmp_path / "candidate.skops")
    text = VALIDATE_CONFIG.format(feature=names[j], change=float(cancer_lr[0].scale_[j]))
    (tmp_path / "hardenml.toml").write_text(text)
    ws = workflow.Workspace.open(tmp_path / "hardenml.toml")
    base, cand = tmp_path / "baseline.skops", tmp_path / "candidate.skops"

    verdict = workflow.validate(ws, base, cand)
    names_checked = [c.name for c in verdict.checks]
    assert names_checked[0] == "clean_accuracy non-inferiority"
    assert names_checked[-3:] == [
        "calibration (ECE) not worse",
        "no finding reopened",
        "behavioural suites pass",
    ]
    check = verdict.checks[-1]
    assert not check.passed and not verdict.passed
    assert (check.baseline, check.candidate) == (0.0, 1.0)
    results = {r["name"]: r for r in verdict.extra["behaviour"]["candidate"]}
    before = {r["name"]: r for r in verdict.extra["behaviour"]["baseline"]}
    assert check.reason.startswith("1 of 2 suites fail on the candidate (up): ")
    assert "up (directional): failure rate 0.000 -> 1.000 (max 0.050) FAILS" in check.reason
    assert (
        f"malignant-found (minimum): accuracy {before['malignant-found']['accuracy']:.3f} -> "
        f"{results['malignant-found']['accuracy']:.3f} (min 0.500) passes"
    ) in check.reason
    assert "behavioural suites pass: 1 of 2" in verdict.reasons[-1]
    (event,) = ws.ledger.events(["validation.completed"])
    assert event.payload["behaviour"]["candidate"][0]["failures"] == results["up"]["n"]

    backwards = workflow.validate(ws, cand, base)
    check = backwards.checks[-1]
    assert check.passed and check.reason.startswith("all 2 suites pass on the candidate: ")
    assert "up (directional): failure rate 1.000 -> 0.000 (max 0.050) passes" in check.reason
    # Same seed, same data: the validator's numbers are the scan's.
    target = cancer_target(cancer_lr)
    scan_like = run_suites(
        ws.config, target, test.x, test.y, feature_names=names, seed=ws.config.data.seed
    )
    assert [r.as_dict() for r in scan_like] == backwards.extra["behaviour"]["candidate"]


def test_no_suites_declared_passes_with_that_reason() -> None:
    config = parse_config(BASE, root=Path("."))
    y = np.zeros(50, dtype=np.int64)
    outcomes = Outcomes(clean=np.ones(50, bool), probs=np.tile([0.9, 0.1], (50, 1)), robust={})
    verdict = compare(config, outcomes, outcomes, y, seed=0, samples=100)
    check = verdict.checks[-1]
    assert check.name == "behavioural suites pass" and check.passed
    assert check.reason == "no behavioural suites declared"
    assert isinstance(config, HardenConfig) and verdict.passed
