"""Integrated Gradients for adversarial examples: completeness holds, attributions depend on
the trained weights (Adebayo et al. 2018), and explanations reach the finding's evidence,
the HTML report and JUnit, over real scans of the digits MLP."""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.ensemble import RandomForestClassifier
from torch import nn

from hardenml.config import ConfigError, parse_config
from hardenml.ledger import FindingState, findings_state
from hardenml.report import HTML_NAME, JUNIT_NAME
from hardenml.scan.explain import (
    explain_evidence,
    explain_flips,
    feature_ablation,
    integrated_gradients,
    require_explainer,
)
from hardenml.targets import InputSpec, SklearnTarget, TorchTarget
from hardenml.workflow import Workspace, gate
from test_reports_support import save_weights, write_config

CLASSES = [str(i) for i in range(10)]
EXPLAIN = "\n[explain]\nenabled = true\nsteps = 48\nexamples = 4\n"


def _target(module: nn.Module, shape: tuple[int, ...] = (64,)) -> TorchTarget:
    return TorchTarget(module, input_spec=InputSpec(shape=shape), classes=CLASSES, device="cpu")


def _explained(folder: Path, module: nn.Module, shape: str) -> tuple[Workspace, FindingState]:
    save_weights(module, folder / "model.safetensors")
    config = write_config(folder, shape=shape)
    config.write_text(config.read_text() + EXPLAIN)
    ws = Workspace.open(config)
    gate(ws)
    (finding,) = [f for f in findings_state(ws.ledger.events()).values() if f.is_open]
    return ws, finding


@pytest.fixture(scope="module")
def tabular(
    digits_mlp: nn.Module, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Workspace, FindingState]:
    return _explained(tmp_path_factory.mktemp("explain-tabular"), digits_mlp, "[64]")


@pytest.fixture(scope="module")
def image(
    digits_mlp: nn.Module, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Workspace, FindingState]:
    return _explained(tmp_path_factory.mktemp("explain-image"), digits_mlp, "[1, 8, 8]")


def test_attributions_sum_to_the_output_change(digits, digits_mlp: nn.Module) -> None:
    """Completeness (Sundararajan et al. 2017): sum of attributions = F(x) - F(baseline)."""
    _, _, x_test, y_test = digits
    target = _target(digits_mlp)
    x = torch.from_numpy(x_test[:16])
    y = torch.from_numpy(y_test[:16]).long()
    att = integrated_gradients(target, x, y, torch.zeros_like(x), steps=64)
    with torch.no_grad():
        logits = digits_mlp(x).gather(1, y[:, None]).squeeze(1)
        base = digits_mlp(torch.zeros_like(x)).gather(1, y[:, None]).squeeze(1)
    np.testing.assert_allclose(att.change, (logits - base).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(att.values.reshape(16, -1).sum(1), att.change, atol=0.05)
    assert att.relative_gap() < 0.02
    np.testing.assert_allclose(att.gap, att.values.reshape(16, -1).sum(1) - att.change, atol=1e-4)


def test_attributions_of_randomised_weights_differ_from_the_trained_models(
    digits, digits_mlp: nn.Module
) -> None:
    """The model-parameter randomisation test of Adebayo et al. 2018, "Sanity Checks for
    Saliency Maps" (https://arxiv.org/abs/1810.03292): an explanation that survives
    re-initialising the weights does not explain the model. The control (the same model,
    another number of steps) shows the measure does detect agreement.

    Measured on the signed attributions of the pixels the input lights up (from a black
    baseline IG gives the others nothing), by Spearman rank correlation. A map of the
    magnitudes over the whole input would look alike for the random model (it traces the
    digit's shape: the paper's finding for IG), which is why the report draws signed maps."""
    _, _, x_test, y_test = digits
    x = torch.from_numpy(x_test[:24])
    y = torch.from_numpy(y_test[:24]).long()
    floor = torch.zeros_like(x)
    lit = x_test[:24] > 0
    trained = integrated_gradients(_target(digits_mlp), x, y, floor, steps=32).values
    again = integrated_gradients(_target(digits_mlp), x, y, floor, steps=64).values

    def agreement(a: np.ndarray, b: np.ndarray) -> float:
        pairs = zip(a, b, lit, strict=True)
        return float(np.mean([spearmanr(p[k], q[k])[0] for p, q, k in pairs]))

    def magnitude_agreement(a: np.ndarray, b: np.ndarray) -> float:
        pairs = zip(np.abs(a), np.abs(b), strict=True)
        return float(np.mean([spearmanr(p, q)[0] for p, q in pairs]))

    assert agreement(trained, again) > 0.95
    for seed in range(3):
        randomised = copy.deepcopy(digits_mlp)
        torch.manual_seed(seed)
        for layer in randomised.modules():
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        shuffled = integrated_gradients(_target(randomised), x, y, floor, steps=32).values
        assert agreement(trained, shuffled) < 0.3, seed
        # What the paper warns of: magnitude maps of the whole input stay alike.
        assert magnitude_agreement(trained, shuffled) > 0.8


def test_the_flip_attribution_sums_to_the_margin_change(digits, digits_mlp: nn.Module) -> None:
    _, _, x_test, y_test = digits
    target = _target(digits_mlp)
    x = x_test[:6]
    y = y_test[:6]
    rng = np.random.default_rng(0)
    x_adv = np.clip(x + rng.uniform(-0.1, 0.1, size=x.shape), 0, 1).astype(np.float32)
    with torch.no_grad():
        pred = digits_mlp(torch.from_numpy(x_adv)).argmax(1).numpy()
    explanation = explain_flips(target, x, x_adv, y, pred, steps=64)
    with torch.no_grad():
        at_adv = digits_mlp(torch.from_numpy(x_adv)).numpy()
        at_x = digits_mlp(torch.from_numpy(x)).numpy()
    rows = np.arange(6)
    margin = lambda logits: logits[rows, pred] - logits[rows, y]  # noqa: E731
    np.testing.assert_allclose(explanation.flip.change, margin(at_adv) - margin(at_x), atol=1e-4)
    sums = explanation.flip.values.reshape(6, -1).sum(1)
    np.testing.assert_allclose(sums, explanation.flip.change, atol=0.05)


def test_tabular_findings_rank_the_features_that_carried_the_flip(
    tabular: tuple[Workspace, FindingState],
) -> None:
    ws, finding = tabular
    (entry,) = [e for e in finding.evidence if e["kind"] == "attributions"]
    assert entry["count"] == 4 and entry["steps"] == 48
    assert 0 <= entry["completeness_gap"] < 0.05
    with np.load(ws.config.root / entry["path"]) as npz:
        flip, x_index = npz["flip"], npz["y"]
    assert flip.shape == (4, 64) and len(x_index) == 4
    ranked = entry["ranked_features"]
    assert len(ranked) == 5
    per_feature = flip.sum(0) / flip.sum()
    top = int(np.argmax(np.abs(per_feature)))
    assert ranked[0]["feature"] == top
    assert ranked[0]["share"] == pytest.approx(per_feature[top], abs=1e-4)
    page = (ws.config.reports_dir / HTML_NAME).read_text()
    assert "Completeness check" in page and f"<code>x[{top}]</code>" in page
    assert page.count('<td class="carried">') == 8  # a column on every example shown
    carried = re.findall(r'<td class="carried">(.*?)</td>', page)
    assert all(c != "-" for c in carried[:4]) and all(c == "-" for c in carried[4:])


def test_image_findings_carry_attribution_maps(image: tuple[Workspace, FindingState]) -> None:
    ws, finding = image
    maps = [e for e in finding.evidence if e["kind"] == "attribution_map"]
    assert len(maps) == 4
    for entry in maps:
        blob = (ws.config.root / entry["path"]).read_bytes()
        assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    page = (ws.config.reports_dir / HTML_NAME).read_text()
    assert page.count('class="attribution-map"') == 2 * 4
    junit = (ws.config.reports_dir / JUNIT_NAME).read_text()
    assert all(f"[[ATTACHMENT|{e['path']}]]" in junit for e in maps)


def test_ablation_of_a_linear_model_is_exact_and_additive() -> None:
    """Known answer: for logits linear in the input, reverting feature j lowers the margin by
    (w[adv] - w[true])_j (x_adv - x)_j exactly, and the effects add up to the whole change."""
    torch.manual_seed(0)
    linear = nn.Linear(6, 3).eval()
    target = TorchTarget(linear, input_spec=InputSpec(shape=(6,)), classes=["a", "b", "c"])
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (4, 6)).astype(np.float32)
    change = rng.uniform(-0.3, 0.3, (4, 6)) * (rng.uniform(size=(4, 6)) < 0.5)
    x_adv = (x + change).astype(np.float32)
    y, pred = np.array([0, 1, 2, 0]), np.array([1, 2, 0, 2])
    ablation = feature_ablation(target, x, x_adv, y, pred)
    w = linear.weight.detach().numpy()
    expected = (w[pred] - w[y]) * (x_adv - x)
    np.testing.assert_allclose(ablation.effect, expected, atol=1e-5)
    np.testing.assert_allclose(ablation.change, expected.sum(1), atol=1e-5)
    assert ablation.additivity_gap() < 1e-4
    assert ablation.ranked()[0]["feature"] == int(np.argmax(np.abs(expected.sum(0))))


def test_a_model_without_gradients_ranks_the_flip_by_ablation(tmp_path: Path, digits) -> None:
    """A forest has no input gradients: its flips are explained by reverting one changed
    feature at a time; features the attack did not change carry exactly nothing."""
    x_train, y_train, x_test, y_test = digits
    forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(x_train, y_train)
    target = SklearnTarget(forest, input_spec=InputSpec(shape=(64,)), classes=CLASSES)
    assert not target.has_gradients
    config = parse_config(write_config(tmp_path).read_text() + EXPLAIN, root=tmp_path)
    # A crude attack: the right half of each image taken from an image of another class.
    x = x_test[:6].copy()
    donor = np.array(
        [next(j for j in range(len(y_test)) if y_test[j] != y_test[i]) for i in range(6)]
    )
    x_adv = x.copy().reshape(6, 8, 8)
    x_adv[:, :, 4:] = x_test[donor].reshape(6, 8, 8)[:, :, 4:]
    x_adv = x_adv.reshape(6, 64).astype(x.dtype)
    pred = forest.predict(x_adv)
    arrays = {"x": x, "x_adv": x_adv, "y": y_test[:6], "pred": pred}
    (entry,) = explain_evidence(config, target, tmp_path, "u", arrays, str)
    assert entry["kind"] == "feature_ablation" and entry["count"] == 4
    assert "gradients" in entry["why"] and "ablation" in entry["method"]
    changed = (x[:4] != x_adv[:4]).any(axis=0)
    ranked = entry["ranked_features"]
    assert len(ranked) == 5 and all(changed[r["feature"]] for r in ranked if r["share"] != 0)
    ablation = feature_ablation(target, x[:4], x_adv[:4], y_test[:4], pred[:4])
    assert (ablation.effect[:, ~changed] == 0).all()
    assert entry["additivity_gap"] == pytest.approx(ablation.additivity_gap(), abs=1e-6)


def test_a_model_too_wide_to_ablate_says_so(tmp_path: Path) -> None:
    forest = RandomForestClassifier(n_estimators=2, random_state=0)
    wide = np.random.default_rng(0).uniform(size=(20, 5000)).astype(np.float32)
    forest.fit(wide, np.arange(20) % 2)
    target = SklearnTarget(forest, input_spec=InputSpec(shape=(5000,)), classes=["0", "1"])
    config = parse_config(write_config(tmp_path).read_text() + EXPLAIN, root=tmp_path)
    arrays = {"x": wide[:2], "x_adv": wide[:2], "y": np.zeros(2), "pred": np.ones(2)}
    (entry,) = explain_evidence(config, target, tmp_path, "u", arrays, str)
    assert entry["kind"] == "attributions_unavailable" and "5000 input features" in entry["reason"]


def test_explanations_without_captum_are_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = parse_config(write_config(tmp_path).read_text() + EXPLAIN, root=tmp_path)
    require_explainer(config)  # captum is installed here
    monkeypatch.setitem(sys.modules, "captum", None)  # as if it were not
    with pytest.raises(ConfigError) as info:
        require_explainer(config)
    (problem,) = info.value.problems
    assert problem.key == "explain.enabled" and "hardenml[explain]" in problem.expected
    off = parse_config(write_config(tmp_path).read_text(), root=tmp_path)
    require_explainer(off)  # not asked for: no captum needed
    assert json.loads(json.dumps(off.explain.model_dump())) == {
        "enabled": False,
        "steps": 32,
        "examples": 8,
    }


def test_a_forest_scan_reports_the_features_that_carried_its_flips(tmp_path: Path) -> None:
    """End to end on a black box: a RandomForest scanned with the tabular black-box threat;
    the finding's evidence ranks the features by ablation and the HTML report says how."""
    from test_patch_kinds import _forest_workspace

    ws = _forest_workspace(tmp_path)
    (tmp_path / "hardenml.toml").write_text((tmp_path / "hardenml.toml").read_text() + EXPLAIN)
    ws = Workspace.open(tmp_path / "hardenml.toml")
    gate(ws, trust=True)
    (finding,) = [
        f for f in findings_state(ws.ledger.events()).values() if f.metric == "robust_accuracy"
    ]
    (entry,) = [e for e in finding.evidence if e["kind"] == "feature_ablation"]
    assert entry["count"] >= 1 and entry["ranked_features"]
    top = entry["ranked_features"][0]["feature"]
    page = (ws.config.reports_dir / HTML_NAME).read_text()
    assert "single-feature ablation" in page and f"<code>x[{top}]</code>" in page
