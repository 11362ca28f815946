"""The gate's verdicts on metrics alone (no training): the toxicity rule weighs its sample."""

from __future__ import annotations

from math import comb

import pytest

from deploy.settings import TrainerSettings
from trainer.evaluate import Metrics
from trainer.gate import decide, rise_p_value

SERVED_PPL = {"perplexity_new": 100.0, "perplexity_regression": 50.0}
# Better on new data, no forgetting: only toxicity can decide.
BETTER_PPL = {"perplexity_new": 70.0, "perplexity_regression": 50.0}


def metrics(ppl: dict[str, float], toxic: int, generations: int) -> Metrics:
    return Metrics(**ppl, toxicity_rate=toxic / generations, generations=generations)


def test_the_p_value_is_the_hypergeometric_tail() -> None:
    # 4 flagged of 8: the chance that all 4 fall among the candidate's 4 is 1 / C(8, 4).
    assert rise_p_value(4, 4, 0, 4) == pytest.approx(1 / comb(8, 4))
    # One flagged of 8 falls on either side with equal chance.
    assert rise_p_value(1, 4, 0, 4) == pytest.approx(0.5)
    assert rise_p_value(0, 16, 3, 16) == 1.0
    assert rise_p_value(2, 0, 0, 16) == 1.0  # nothing sampled: nothing to compare


def test_one_flagged_generation_of_four_is_chance_and_the_candidate_passes() -> None:
    verdict = decide(metrics(BETTER_PPL, 1, 4), metrics(SERVED_PPL, 0, 4), TrainerSettings())
    assert verdict.passed, verdict.reason


def test_a_clear_rise_in_toxic_generations_is_rejected_with_its_p_value() -> None:
    verdict = decide(metrics(BETTER_PPL, 6, 16), metrics(SERVED_PPL, 0, 16),
                     TrainerSettings())
    assert not verdict.passed
    assert verdict.reason.startswith("more toxic: 0.375 of generations vs 0.000 served")
    assert "p = 0.009" in verdict.reason


def test_alpha_one_gates_on_the_rates_alone() -> None:
    verdict = decide(metrics(BETTER_PPL, 1, 4), metrics(SERVED_PPL, 0, 4),
                     TrainerSettings(toxicity_alpha=1.0))
    assert not verdict.passed and verdict.reason.startswith("more toxic")


def test_a_rise_within_the_tolerance_needs_no_test() -> None:
    verdict = decide(metrics(BETTER_PPL, 1, 100), metrics(SERVED_PPL, 0, 100),
                     TrainerSettings(toxicity_alpha=1.0))
    assert verdict.passed, verdict.reason


def test_forgetting_is_bounded_against_the_base_not_only_the_served_version() -> None:
    # Each version forgot 5% more than the one before it: within regression_tolerance of
    # the served version, but 21.6% above the base after four versions.
    served = metrics({"perplexity_new": 100.0, "perplexity_regression": 50.0 * 1.05 ** 3},
                     0, 4)
    candidate = metrics({"perplexity_new": 70.0, "perplexity_regression": 50.0 * 1.05 ** 4},
                        0, 4)
    settings = TrainerSettings()
    assert decide(candidate, served, settings).passed
    verdict = decide(candidate, served, settings, base_regression=50.0)
    assert not verdict.passed
    assert verdict.reason.startswith("forgets over versions: regression perplexity 60.78 vs "
                                     "50.00 of the base (allowed <= 57.50")
    assert decide(candidate, served, TrainerSettings(base_regression_tolerance=0.25),
                  base_regression=50.0).passed
