"""Drift detectors on synthetic windows: they find real drift, and stay quiet otherwise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deploy.settings import MonitoringSettings
from monitoring.drift import (
    CategoricalDriftDetector,
    EmbeddingDriftDetector,
    NumericDriftDetector,
    PageHinkley,
    RateChangeDetector,
    jensen_shannon,
    mmd_permutation_test,
    mmd_scan_test,
    population_stability_index,
)
from monitoring.drift.embedding import _null_tail
from monitoring.drift.output import Answers, OutputDriftDetector, is_refusal


def gaussian(n: int, *, shift: float = 0.0, seed: int = 0, dim: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(n, dim))
    rows[:, 0] += shift
    return rows.astype(np.float32)


def test_mmd_p_values_are_roughly_uniform_when_both_windows_come_from_one_distribution() -> None:
    p_values = [
        mmd_permutation_test(gaussian(60, seed=2 * i), gaussian(60, seed=2 * i + 1),
                             permutations=200, seed=i).p_value
        for i in range(40)
    ]
    # Calibrated: about 10% below 0.1 (binomial noise allowed), none absurdly small.
    assert sum(p < 0.1 for p in p_values) <= 10
    assert min(p_values) > 1e-3


def test_mmd_finds_a_shift_of_one_standard_deviation_with_a_tiny_p_value() -> None:
    test = mmd_permutation_test(gaussian(200, seed=1), gaussian(200, shift=1.0, seed=2),
                                permutations=200, alpha=0.001)
    assert test.p_value < 1e-5  # the skewness-matched tail is heavier than a Gamma's
    assert test.mmd2 > test.threshold


def test_mmd_refuses_windows_of_different_widths() -> None:
    with pytest.raises(ValueError, match="widths differ"):
        mmd_permutation_test(gaussian(10, dim=4), gaussian(10, dim=5))


def newest_first(recent: np.ndarray, older: np.ndarray) -> np.ndarray:
    return np.concatenate([recent, older])


def test_mmd_scan_finds_a_shift_in_the_newest_quarter_that_the_whole_window_test_misses() -> None:
    for seed in range(3):
        reference = gaussian(400, seed=seed)
        current = newest_first(gaussian(100, shift=1.0, seed=100 + seed),
                               gaussian(300, seed=200 + seed))
        whole = mmd_scan_test(reference, current, fractions=(1.0,), permutations=200, seed=seed)
        scan = mmd_scan_test(reference, current, permutations=200, seed=seed)
        assert whole.p_value > 1e-3
        assert scan.p_value < 1e-6
        assert scan.n_current == 100
        assert scan.mmd2 > scan.threshold


def test_mmd_scan_p_values_stay_calibrated_when_both_windows_come_from_one_distribution(
) -> None:
    p_values = [
        mmd_scan_test(gaussian(120, seed=2 * i), gaussian(120, seed=2 * i + 1),
                      permutations=200, seed=i).p_value
        for i in range(40)
    ]
    # Bonferroni over three sub-windows: at most about 10% below 0.1, none absurdly small.
    assert sum(p < 0.1 for p in p_values) <= 8
    assert min(p_values) > 1e-3


def test_null_tail_fit_follows_a_null_more_skewed_than_a_gamma_with_its_mean_and_variance(
) -> None:
    # Like MMD on sentence embeddings: a large mean, a small spread, and a few dominant
    # chi-square terms that make it far more skewed (~1.0) than the two-moment Gamma (0.17).
    rng = np.random.default_rng(0)

    def draw(k: int) -> np.ndarray:
        return 50 + 2 * rng.chisquare(1, k) + rng.chisquare(10, k)

    quantile = float(np.quantile(draw(2_000_000), 1 - 1e-4))
    tails = [float(_null_tail(draw(500)).sf(quantile)) for _ in range(9)]
    # The true tail there is 1e-4; a Gamma of the same mean and variance says ~1e-7.
    assert 1e-5 < float(np.median(tails)) < 1e-3


def test_mmd_scan_refuses_fractions_outside_zero_to_one() -> None:
    with pytest.raises(ValueError, match="scan fractions"):
        mmd_scan_test(gaussian(10), gaussian(10), fractions=(1.0, 1.5))


def test_settings_refuse_scan_fractions_outside_zero_to_one() -> None:
    with pytest.raises(ValueError, match="embedding_scan_fractions must be fractions"):
        MonitoringSettings(embedding_scan_fractions=(1.0, 0.0))


def test_embedding_detector_says_when_the_newest_turns_drifted() -> None:
    detector = EmbeddingDriftDetector(permutations=200, min_rows=50)
    current = newest_first(gaussian(100, shift=1.0, seed=7), gaussian(300, seed=8))
    result = detector.compare(gaussian(400, seed=6), current)
    assert result.status == "drift"
    assert "newest 100 of 400 turns" in result.detail


@pytest.mark.parametrize(("n_reference", "n_current"), [(0, 0), (0, 100), (100, 3), (49, 49)])
def test_every_detector_reports_insufficient_data_on_an_empty_or_tiny_window(
    n_reference: int, n_current: int
) -> None:
    results = [
        EmbeddingDriftDetector(min_rows=50).compare(gaussian(n_reference), gaussian(n_current)),
        CategoricalDriftDetector("topic", min_rows=50).compare(["a"] * n_reference,
                                                               ["b"] * n_current),
        NumericDriftDetector("length", min_rows=50).compare([1.0] * n_reference,
                                                            [900.0] * n_current),
        RateChangeDetector("negative_feedback_rate", min_rows=50).compare(
            [False] * n_reference, [True] * n_current),
    ]
    for result in results:
        assert result.status == "insufficient_data", result
        assert not result.drifted
        assert math.isnan(result.statistic)
        assert "insufficient data" in result.detail


def test_embedding_detector_flags_a_shift_and_passes_a_same_distribution_window() -> None:
    detector = EmbeddingDriftDetector(permutations=200, min_rows=50)
    assert detector.compare(gaussian(300, seed=1), gaussian(300, seed=2)).status == "ok"
    drifted = detector.compare(gaussian(300, seed=1), gaussian(300, shift=0.8, seed=3),
                               labels={"tenant": "acme"})
    assert drifted.status == "drift"
    assert drifted.labels == {"tenant": "acme"}
    assert drifted.p_value is not None and drifted.p_value < 0.001


def test_psi_and_jensen_shannon_are_zero_for_equal_shares_and_grow_with_the_difference() -> None:
    assert population_stability_index([10, 20, 30], [20, 40, 60]) == pytest.approx(0, abs=1e-2)
    assert jensen_shannon([10, 20, 30], [10, 20, 30]) == pytest.approx(0, abs=1e-9)
    small = population_stability_index([50, 50], [45, 55])
    large = population_stability_index([50, 50], [10, 90])
    assert 0 < small < large
    assert jensen_shannon([1000, 0], [0, 1000]) == pytest.approx(1, abs=0.01)


def test_topic_detector_flags_a_new_topic_taking_a_third_of_the_traffic() -> None:
    rng = np.random.default_rng(0)
    reference = list(rng.choice(["billing", "login", "shipping"], size=1000))
    current = list(rng.choice(["billing", "login", "shipping"], size=600)) + ["refunds"] * 300
    result = CategoricalDriftDetector("topic").compare(reference, current)
    assert result.status == "drift"
    assert result.statistic > result.threshold


def test_small_windows_raise_the_psi_threshold_so_sampling_noise_does_not_alarm() -> None:
    rng = np.random.default_rng(1)
    alarms = 0
    for _ in range(200):
        reference = rng.integers(0, 500, size=60).tolist()
        current = rng.integers(0, 500, size=60).tolist()
        result = NumericDriftDetector("length").compare(reference, current)
        assert result.threshold > 0.2
        alarms += result.drifted
    assert alarms <= 1


def test_length_detector_flags_answers_that_got_three_times_longer() -> None:
    rng = np.random.default_rng(2)
    result = NumericDriftDetector("length").compare(rng.normal(100, 20, 500),
                                                    rng.normal(300, 20, 500))
    assert result.status == "drift"
    assert "current mean" in result.detail


def test_page_hinkley_stays_quiet_on_a_stationary_rate_and_detects_a_doubling() -> None:
    rng = np.random.default_rng(3)
    quiet = PageHinkley(mean=0.1, std=math.sqrt(0.09))
    assert not any(quiet.update(float(x)) for x in rng.random(20_000) < 0.1)

    loud = PageHinkley(mean=0.1, std=math.sqrt(0.09))
    for x in rng.random(2_000) < 0.2:
        loud.update(float(x))
    assert loud.detected_at is not None and loud.detected_at < 500


def test_rate_detector_reports_when_negative_feedback_rose_from_5_to_25_percent() -> None:
    rng = np.random.default_rng(4)
    reference = list(rng.random(1000) < 0.05)
    assert RateChangeDetector("negative_feedback_rate").compare(
        reference, list(rng.random(400) < 0.05)).status == "ok"
    result = RateChangeDetector("negative_feedback_rate").compare(
        reference, list(rng.random(400) < 0.25))
    assert result.status == "drift"
    assert "change detected after" in result.detail


@pytest.mark.parametrize(
    ("answer", "refused"),
    [
        ("I'm sorry, but I can't help with that.", True),
        ("As an AI, I do not have opinions.", True),
        ("I cannot share that information.", True),
        ("Sure! Here is how you reset your password.", False),
        ("Sorry for the wait: your order shipped today.", False),
    ],
)
def test_refusals_are_recognised_by_their_usual_phrasing(answer: str, refused: bool) -> None:
    assert is_refusal(answer) is refused


def test_output_detector_flags_a_version_that_starts_refusing_and_rambling() -> None:
    rng = np.random.default_rng(5)
    normal = [f"Here is the answer {'x' * int(n)}." for n in rng.integers(20, 60, size=300)]
    reference = Answers(texts=normal, toxicity=list(rng.random(300) * 0.1))
    current = Answers(
        texts=["I'm sorry, but I can't help with that. " + "y" * 300] * 200,
        toxicity=list(rng.random(200) * 0.1),
    )
    results = {r.detector: r for r in OutputDriftDetector().compare(
        reference, current, labels={"model_version": "v2"})}
    assert results["answer_length_psi"].status == "drift"
    assert results["refusal_rate"].status == "drift"
    assert results["answer_toxicity_psi"].status == "ok"
    assert results["refusal_rate"].labels == {"model_version": "v2"}
