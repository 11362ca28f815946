"""The canary's decision, and reading its figures from the gateway's metrics."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from inference.canary import (
    ERRORS_METRIC,
    FEEDBACK_METRIC,
    LATENCY_METRIC,
    ArmStats,
    Thresholds,
    judge,
    stats_from_metrics,
)

LIMITS = Thresholds(min_requests=20, window_s=60, max_p99_ratio=1.5, max_error_rate=0.05,
                    max_negative_feedback_rate=0.5)


def arm(*, answered: int = 100, errors: int = 0, feedback: int = 0, negative: int = 0,
        latency_s: float = 0.1) -> ArmStats:
    """`answered` answers, all in the bucket ending at `latency_s`."""
    return ArmStats(answered=answered, errors=errors, feedback=feedback,
                    negative_feedback=negative,
                    buckets=((latency_s / 2, 0.0), (latency_s, float(answered)),
                             (math.inf, float(answered))))


@pytest.mark.parametrize(
    ("canary", "elapsed_s", "decision", "reason"),
    [
        (arm(answered=5), 10, "wait", "too few"),
        (arm(answered=5), 60, "rollback", "fewer than the 20"),
        (arm(answered=90, errors=10), 10, "rollback", "error rate 10.0%"),
        (arm(latency_s=0.4), 10, "rollback", "p99"),
        (arm(feedback=10, negative=6), 10, "rollback", "negative feedback on 60%"),
        (arm(), 10, "wait", "within limits"),
        (arm(feedback=10, negative=5), 61, "promote", "within every limit"),
    ],
)
def test_the_verdict_follows_the_thresholds(
    canary: ArmStats, elapsed_s: float, decision: str, reason: str
) -> None:
    verdict = judge(arm(), canary, elapsed_s=elapsed_s, limits=LIMITS)

    assert verdict.decision == decision
    assert reason in verdict.reason


def test_a_quantile_is_interpolated_within_its_bucket() -> None:
    stats = ArmStats(answered=100, buckets=((0.1, 50.0), (0.2, 100.0), (math.inf, 100.0)))

    assert stats.quantile_s(0.5) == pytest.approx(0.1)
    assert stats.quantile_s(0.99) == pytest.approx(0.198)


def test_stats_since_a_snapshot_subtract_counters_and_buckets() -> None:
    later, earlier = arm(answered=30, errors=2, feedback=4, negative=1), arm(answered=10)

    since = later.minus(earlier)

    assert (since.answered, since.errors, since.feedback, since.negative_feedback) == (
        20, 2, 4, 1)
    assert dict(since.buckets)[math.inf] == 20


def gateway_metrics(model: str, *, canary_answers: int, canary_negative: int) -> str:
    """The exposition text of a gateway's registry with the canary's metrics in it."""
    registry = CollectorRegistry()
    latency = Histogram(LATENCY_METRIC, "latency", ["model", "version"], registry=registry,
                        buckets=(0.1, 0.5))
    errors = Counter(ERRORS_METRIC, "errors", ["model", "version"], registry=registry)
    feedback = Counter(FEEDBACK_METRIC, "feedback", ["model", "version", "negative"],
                       registry=registry)
    for _ in range(canary_answers):
        latency.labels(model, "2").observe(0.3)
    latency.labels(model, "1").observe(0.05)
    latency.labels("other-model", "2").observe(0.05)
    errors.labels(model, "2").inc()
    feedback.labels(model, "2", "true").inc(canary_negative)
    feedback.labels(model, "2", "false").inc()
    return generate_latest(registry).decode()


def test_two_gateways_metrics_are_summed_per_version_of_the_model() -> None:
    texts = [gateway_metrics("chat", canary_answers=3, canary_negative=2),
             gateway_metrics("chat", canary_answers=1, canary_negative=0)]

    stats = stats_from_metrics(texts, model="chat")

    assert set(stats) == {"1", "2"}
    canary = stats["2"]
    assert (canary.answered, canary.errors, canary.feedback, canary.negative_feedback) == (
        4, 2, 4, 2)
    assert dict(canary.buckets) == {0.1: 0.0, 0.5: 4.0, math.inf: 4.0}
    assert stats["1"].answered == 2
