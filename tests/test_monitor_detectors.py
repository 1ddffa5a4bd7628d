"""The monitor's detectors: known answers on tiny inputs, false alarms at about alpha on
undrifted real data, and detection of real shifts, adversarial inputs and a replayed
Square attack against a model trained here."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from torch import Tensor

from hardenml.monitor.detectors import (
    AdversarialScore,
    ConfidenceShift,
    DetectorReading,
    FeatureDrift,
    MMDDrift,
    MonitorError,
    PredictionShift,
    QueryCampaign,
    Window,
    holm_adjust,
    target_predict,
)
from hardenml.monitor.mmd import mmd2_unbiased, squared_distances
from hardenml.targets import Target, TorchTarget
from hardenml.threats import threat_class

DIGITS = load_digits()
DIGIT_ROWS = DIGITS.data / 16.0
SEEDS = range(50)
# 50 windows at alpha 0.05: P(Binomial(50, 0.05) >= 8) is about 0.003.
MAX_FALSE_ALARMS = 7


def overall(readings: list[DetectorReading]) -> DetectorReading:
    return next(r for r in readings if r.feature is None)


def brute_force_ks(a: np.ndarray, b: np.ndarray) -> float:
    """sup over every observed value of |F_a - F_b|, the two-sample KS distance."""
    return max(abs((a <= v).mean() - (b <= v).mean()) for v in np.concatenate([a, b]))


def brute_force_mmd2(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """Gretton et al. 2012, Eq. 3, written as the three double sums."""

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.exp(-((a - b) ** 2).sum() / (2 * sigma**2)))

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


# --- known answers ---------------------------------------------------------------------


def test_holm_matches_a_hand_computed_case() -> None:
    # Sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> 0.06 (monotone).
    adjusted = holm_adjust(np.array([0.01, 0.04, 0.03, 0.005]))
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm_adjust(np.array([0.5, 0.9])), [1.0, 1.0])
    assert holm_adjust(np.array([])).shape == (0,)


def test_feature_ks_matches_brute_force_and_scipy_then_holm() -> None:
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(12, 3))
    window = rng.normal(size=(9, 3)) + np.array([0.0, 1.5, 0.3])
    readings = FeatureDrift(reference, min_window=1).evaluate(Window(inputs=window))
    per_feature = readings[:3]
    raw = [ks_2samp(reference[:, j], window[:, j], method="exact").pvalue for j in range(3)]
    for j, reading in enumerate(per_feature):
        assert reading.feature == f"x{j}"
        assert reading.statistic == pytest.approx(brute_force_ks(reference[:, j], window[:, j]))
    np.testing.assert_allclose([r.p_value for r in per_feature], holm_adjust(np.array(raw)))
    assert overall(readings).p_value == pytest.approx(min(r.p_value for r in per_feature))
    assert overall(readings).feature is None and overall(readings).n == 9


def test_mmd_statistic_matches_the_three_double_sums() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(4, 3)) + 0.5
    sigma = 1.3
    pooled = np.concatenate([x, y])
    kernel = np.exp(-squared_distances(pooled, pooled) / (2 * sigma**2))
    split = np.array([[True] * 5 + [False] * 4])
    assert mmd2_unbiased(kernel, split)[0] == pytest.approx(brute_force_mmd2(x, y, sigma))


def test_mmd_exact_p_value_matches_enumeration_of_every_split() -> None:
    rng = np.random.default_rng(2)
    reference, window = rng.normal(size=(4, 2)), rng.normal(size=(4, 2)) + 1.0
    detector = MMDDrift(reference, permutations=100, min_window=2)
    statistic, p_value, exact = detector.test(window)
    assert exact  # C(8, 4) = 70 splits <= 100: enumerated
    pooled = np.concatenate([reference, window])
    sigma = detector.bandwidth_
    stats = [
        brute_force_mmd2(pooled[list(c)], pooled[[i for i in range(8) if i not in c]], sigma)
        for c in itertools.combinations(range(8), 4)
    ]
    assert statistic == pytest.approx(brute_force_mmd2(reference, window, sigma))
    assert p_value == pytest.approx(np.mean([s >= statistic - 1e-12 for s in stats]))


def test_mmd_monte_carlo_p_value_is_close_to_the_exact_one_and_seeded() -> None:
    rng = np.random.default_rng(4)
    reference, window = rng.normal(size=(6, 2)), rng.normal(size=(6, 2)) + 0.6
    _, exact_p, exact = MMDDrift(reference, permutations=924, min_window=2).test(window)
    sampled = MMDDrift(reference, permutations=800, min_window=2, seed=5)
    _, sampled_p, sampled_exact = sampled.test(window)
    assert exact and not sampled_exact
    # Within 4 standard errors of a Monte Carlo estimate from 800 draws.
    assert abs(sampled_p - exact_p) < 4 * np.sqrt(exact_p * (1 - exact_p) / 800)
    assert sampled.test(window) == sampled.test(window)


# --- constant and high-dimensional features -----------------------------------------------


def test_constant_reference_feature_ignores_a_stray_value_and_flags_a_shift() -> None:
    rng = np.random.default_rng(0)
    reference = np.column_stack([rng.normal(size=300), np.zeros(300)])
    stray = np.column_stack([rng.normal(size=100), np.zeros(100)])
    stray[0, 1] = 1.0
    detector = FeatureDrift(reference)
    quiet = detector.evaluate(Window(inputs=stray))
    assert not overall(quiet).flagged
    assert quiet[1].statistic == pytest.approx(0.01)  # the share of rows off the constant
    assert "constant in the reference" in quiet[1].detail
    shifted = stray.copy()
    shifted[:40, 1] = 0.5
    readings = detector.evaluate(Window(inputs=shifted))
    assert readings[1].flagged and not readings[0].flagged


def test_high_dimensional_inputs_are_tested_on_a_seeded_subset_of_varying_features() -> None:
    # 28x28 images: the 8x8 digits upsampled, so the border pixels never vary.
    images = np.kron(DIGIT_ROWS.reshape(-1, 8, 8), np.ones((3, 3)))
    images = np.pad(images, ((0, 0), (2, 2), (2, 2))).reshape(len(images), -1)
    detector = FeatureDrift(images[:1000], max_features=64, seed=7)
    again = FeatureDrift(images[:1000], max_features=64, seed=7)
    assert images.shape[1] == 784 and len(detector.features_) == 64
    np.testing.assert_array_equal(detector.features_, again.features_)
    assert (images[:1000, detector.features_].std(axis=0) > 0).all()
    readings = detector.evaluate(Window(inputs=images[1000:1200]))
    assert len(readings) == 65
    assert "seeded subset (seed 7) of 64 of 784 features" in overall(readings).detail


# --- false alarms on undrifted data, detection of shifted data ----------------------------


def null_split(seed: int, rows: np.ndarray, reference: int, window: int) -> tuple[np.ndarray, ...]:
    order = np.random.default_rng(seed).permutation(len(rows))
    return rows[order[:reference]], rows[order[reference : reference + window]]


def test_input_drift_false_alarms_stay_near_alpha_on_undrifted_digits() -> None:
    ks_alarms = mmd_alarms = 0
    for seed in SEEDS:
        reference, window = null_split(seed, DIGIT_ROWS, 1000, 200)
        ks_alarms += overall(FeatureDrift(reference).evaluate(Window(inputs=window))).flagged
        mmd = MMDDrift(reference, permutations=100, seed=seed)
        mmd_alarms += mmd.evaluate(Window(inputs=window))[0].flagged
    assert ks_alarms <= MAX_FALSE_ALARMS
    assert mmd_alarms <= MAX_FALSE_ALARMS


def test_feature_shift_flags_the_shifted_features() -> None:
    reference, window = null_split(0, DIGIT_ROWS, 1000, 200)
    shifted = window.copy()
    shifted[:, [20, 21, 22]] = np.clip(shifted[:, [20, 21, 22]] + 0.3, 0, 1)
    readings = FeatureDrift(reference).evaluate(Window(inputs=shifted))
    assert {r.feature for r in readings if r.flagged} >= {"x20", "x21", "x22", None}
    assert not FeatureDrift(reference).evaluate(Window(inputs=window))[-1].flagged


def test_covariate_scaling_is_flagged_by_mmd() -> None:
    reference, window = null_split(1, DIGIT_ROWS, 1000, 200)
    detector = MMDDrift(reference)
    assert not detector.evaluate(Window(inputs=window))[0].flagged
    scaled = detector.evaluate(Window(inputs=window * 0.7))[0]
    assert scaled.flagged and scaled.p_value < 0.01 and scaled.statistic > 0


@pytest.fixture(scope="module")
def digits_logistic() -> tuple[LogisticRegression, np.ndarray]:
    """A logistic regression on 500 digits; the other 1,297 rows are held out."""
    order = np.random.default_rng(0).permutation(len(DIGIT_ROWS))
    model = LogisticRegression(max_iter=300).fit(
        DIGIT_ROWS[order[:500]], DIGITS.target[order[:500]]
    )
    return model, order[500:]


def test_output_shift_false_alarms_stay_near_alpha_on_held_out_digits(
    digits_logistic: tuple[LogisticRegression, np.ndarray],
) -> None:
    model, held_out = digits_logistic
    probs = model.predict_proba(DIGIT_ROWS[held_out])
    alarms = {"prediction": 0, "max_probability": 0, "mean_confidence": 0}
    for seed in SEEDS:
        reference, window = null_split(seed, probs, 900, 200)
        alarms["prediction"] += (
            PredictionShift(reference).evaluate(Window(probabilities=window))[0].flagged
        )
        ks, mean = ConfidenceShift(reference).evaluate(Window(probabilities=window))
        alarms["max_probability"] += ks.flagged
        alarms["mean_confidence"] += mean.flagged
    assert max(alarms.values()) <= MAX_FALSE_ALARMS, alarms


def test_label_shift_is_flagged_by_prediction_shift(
    digits_logistic: tuple[LogisticRegression, np.ndarray],
) -> None:
    model, held_out = digits_logistic
    reference_rows, pool = held_out[:900], held_out[900:]
    detector = PredictionShift(model.predict_proba(DIGIT_ROWS[reference_rows]))
    # A window where one digit in three is a 7: the class mix moved, the inputs did not.
    sevens = pool[DIGITS.target[pool] == 7]
    others = pool[DIGITS.target[pool] != 7]
    window = np.concatenate([sevens[:35], others[:70]])
    reading = detector.evaluate(Window(probabilities=model.predict_proba(DIGIT_ROWS[window])))[0]
    assert reading.flagged and "class 7" in reading.detail
    same_mix = detector.evaluate(Window(probabilities=model.predict_proba(DIGIT_ROWS[pool])))[0]
    assert not same_mix.flagged


def test_noisy_inputs_are_flagged_by_confidence_shift_with_an_interval_below_zero(
    digits_logistic: tuple[LogisticRegression, np.ndarray],
) -> None:
    model, held_out = digits_logistic
    detector = ConfidenceShift(model.predict_proba(DIGIT_ROWS[held_out[:900]]))
    pool = DIGIT_ROWS[held_out[900:]]
    noisy = np.clip(pool + np.random.default_rng(0).normal(0, 0.35, pool.shape), 0, 1)
    ks, mean = detector.evaluate(Window(probabilities=model.predict_proba(noisy)))
    assert ks.flagged and mean.flagged
    assert mean.statistic < 0 and mean.interval is not None and mean.interval[1] < 0


# --- adversarial inputs ----------------------------------------------------------------------


@pytest.mark.parametrize("threat", ["pgd", "fgsm"])
def test_adversarial_score_is_higher_on_attacked_inputs(
    threat: str, digits: tuple[np.ndarray, ...], digits_target: TorchTarget
) -> None:
    _, _, x_test, y_test = digits
    detector = AdversarialScore(target_predict(digits_target), x_test[:200], seed=0)
    clean = torch.as_tensor(x_test[200:400])
    attack = threat_class(threat)()
    result = attack(
        digits_target,
        clean,
        torch.as_tensor(y_test[200:400]),
        budget=0.1,
        generator=torch.Generator().manual_seed(0),
    )
    attacked = result.x_adv.numpy()
    assert detector.scores(attacked).mean() > 1.3 * detector.scores(clean.numpy()).mean()
    clean_reading = detector.evaluate(Window(inputs=clean.numpy()))[0]
    attacked_reading = detector.evaluate(Window(inputs=attacked))[0]
    assert not clean_reading.flagged
    assert attacked_reading.flagged and attacked_reading.interval is not None
    assert attacked_reading.interval[0] > detector.false_positive_rate


def test_adversarial_score_is_a_function_of_the_input_alone(
    digits: tuple[np.ndarray, ...], digits_target: TorchTarget
) -> None:
    _, _, x_test, _ = digits
    detector = AdversarialScore(target_predict(digits_target), x_test[:100], seed=0)
    together = detector.scores(x_test[100:110])
    np.testing.assert_allclose(detector.scores(x_test[105:110]), together[5:])
    assert ((together >= 0) & (together <= 1)).all()
    capped = AdversarialScore(target_predict(digits_target), x_test[:100], max_window=30)
    assert capped.evaluate(Window(inputs=x_test[100:180]))[0].n == 30


# --- query campaigns ------------------------------------------------------------------------


class RecordingTarget(Target):
    """A black box over another target that keeps every input sent to it, as a server's
    telemetry would: what a Square attack's queries look like from the service side."""

    def __init__(self, inner: Target) -> None:
        super().__init__(
            input_spec=inner.input_spec,
            classes=inner.classes,
            has_gradients=False,
            device=inner.device,
        )
        self.inner = inner
        self.sent: list[np.ndarray] = []

    def _forward(self, x: Tensor) -> Tensor:
        self.sent.append(x.detach().cpu().numpy().copy())
        return self.inner.logits(x)


def square_queries(
    target: Target, x: np.ndarray, y: np.ndarray, *, queries: int, seed: int
) -> np.ndarray:
    """Every input a Square attack (L-inf, budget 0.1) sends to `target` while attacking x."""
    black_box = RecordingTarget(target)
    threat_class("square")(queries=queries)(
        black_box,
        torch.as_tensor(x),
        torch.as_tensor(y),
        budget=0.1,
        generator=torch.Generator().manual_seed(seed),
    )
    return np.concatenate(black_box.sent)


def ordinary_traffic(rows: np.ndarray, clients: int, per_client: int, seed: int) -> Window:
    rng = np.random.default_rng(seed)
    picks = [rng.choice(len(rows), per_client, replace=False) for _ in range(clients)]
    inputs = np.concatenate([rows[p] for p in picks])
    ids = [f"client-{c}" for c in range(clients) for _ in range(per_client)]
    order = rng.permutation(len(ids))  # interleaved, as requests arrive
    return Window(inputs=inputs[order], clients=[ids[i] for i in order])


def test_replayed_square_attack_flags_its_client_and_ordinary_traffic_does_not(
    digits: tuple[np.ndarray, ...], digits_target: TorchTarget
) -> None:
    x_train, _, x_test, y_test = digits
    queries = square_queries(digits_target, x_test[:4], y_test[:4], queries=100, seed=0)
    assert len(queries) >= 100
    detector = QueryCampaign(x_train)
    traffic = ordinary_traffic(x_test, clients=20, per_client=40, seed=1)
    assert traffic.inputs is not None and traffic.clients is not None
    quiet = detector.evaluate(traffic)
    assert [r.feature for r in quiet] == [None] and not quiet[0].flagged
    assert "0 of 20 clients" in quiet[0].detail
    one_client = detector.evaluate(Window(inputs=x_test, clients=["crawler"] * len(x_test)))
    assert not overall(one_client).flagged
    mixed = Window(
        inputs=np.concatenate([traffic.inputs, queries]),
        clients=[*traffic.clients, *["mallory"] * len(queries)],
    )
    readings = detector.evaluate(mixed)
    assert [r.feature for r in readings if r.flagged] == ["mallory", None]
    assert readings[0].statistic > 0.9 and readings[0].p_value is not None
    assert overall(readings).statistic == 1.0


def test_query_campaign_in_linf_also_flags_the_attack(
    digits: tuple[np.ndarray, ...], digits_target: TorchTarget
) -> None:
    x_train, _, x_test, y_test = digits
    queries = square_queries(digits_target, x_test[:2], y_test[:2], queries=60, seed=1)
    detector = QueryCampaign(x_train, norm="linf")
    assert overall(detector.evaluate(Window(inputs=queries, clients=["m"] * len(queries)))).flagged
    assert not overall(detector.evaluate(ordinary_traffic(x_test, 20, 40, seed=2))).flagged


# --- bad input -------------------------------------------------------------------------------


def test_missing_or_mismatched_window_data_gets_a_clear_error() -> None:
    detector = FeatureDrift(DIGIT_ROWS[:100])
    with pytest.raises(MonitorError, match="needs the window's inputs"):
        detector.evaluate(Window(probabilities=np.full((30, 2), 0.5)))
    with pytest.raises(MonitorError, match="63 features, the reference 64"):
        detector.evaluate(Window(inputs=DIGIT_ROWS[:30, :63]))
    with pytest.raises(MonitorError, match="NaN"):
        detector.evaluate(Window(inputs=np.full((30, 64), np.nan)))
    with pytest.raises(MonitorError, match="not probabilities"):
        PredictionShift(np.full((30, 2), 0.9))
    with pytest.raises(MonitorError, match="client ids"):
        QueryCampaign(DIGIT_ROWS[:100]).evaluate(Window(inputs=DIGIT_ROWS[:30]))


def test_a_window_below_min_window_gives_no_readings() -> None:
    assert (
        FeatureDrift(DIGIT_ROWS[:100], min_window=20).evaluate(Window(inputs=DIGIT_ROWS[:5])) == []
    )
    assert MMDDrift(DIGIT_ROWS[:100]).evaluate(Window(inputs=DIGIT_ROWS[:5])) == []


def test_a_reading_round_trips_through_a_dict() -> None:
    reading = DetectorReading("mmd_drift", None, 0.1, 0.02, True, 200, "x", (0.0, 0.2))
    assert DetectorReading.from_dict(reading.as_dict()) == reading
