"""Canary: judge a new version on its share of live traffic, against the live version.

While a canary runs, the gateway sends `inference.canary_share` of the requests to the
canary Triton model (a second model name, see `SwapController.start_canary`) and counts,
per answering version, in its `/metrics`:

- `flywheel_gateway_request_duration_seconds` (histogram): latency of answered requests;
- `flywheel_gateway_version_errors` (counter): requests a version failed (the gateway
  answered them from the live version instead, so users did not see the failure);
- `flywheel_gateway_feedback` (counter, `negative` = "true"/"false"): feedback on answers.

The controller scrapes those counters at the start and at each check (`GatewayStats`),
takes the difference, and `judge` decides. A canary is rolled back as soon as it has
`canary_min_requests` answers and breaks a threshold; it is promoted only after
`canary_window_s` with enough answers and no threshold broken (feedback comes late);
with too few answers by then it is rolled back, since nothing shows it is good.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import httpx
from prometheus_client.parser import text_string_to_metric_families

from inference.errors import CanaryError

LATENCY_METRIC = "flywheel_gateway_request_duration_seconds"
ERRORS_METRIC = "flywheel_gateway_version_errors"
FEEDBACK_METRIC = "flywheel_gateway_feedback"

Decision = Literal["wait", "promote", "rollback"]


@dataclass(frozen=True)
class ArmStats:
    """What one version did since the canary started."""

    answered: int = 0
    errors: int = 0
    feedback: int = 0
    negative_feedback: int = 0
    #: Cumulative histogram: upper bound in seconds -> answers at most that slow.
    buckets: tuple[tuple[float, float], ...] = ()

    @property
    def error_rate(self) -> float:
        total = self.answered + self.errors
        return self.errors / total if total else 0.0

    @property
    def negative_feedback_rate(self) -> float:
        return self.negative_feedback / self.feedback if self.feedback else 0.0

    def quantile_s(self, q: float) -> float:
        """Latency quantile, interpolated within histogram buckets like PromQL's."""
        finite = [(le, n) for le, n in self.buckets if math.isfinite(le)]
        total = self.buckets[-1][1] if self.buckets else 0.0
        if total <= 0:
            return math.nan
        rank = q * total
        lower_le, lower_n = 0.0, 0.0
        for le, n in finite:
            if n >= rank:
                return lower_le + (le - lower_le) * (rank - lower_n) / max(n - lower_n, 1e-12)
            lower_le, lower_n = le, n
        return finite[-1][0] if finite else math.nan

    def minus(self, before: ArmStats) -> ArmStats:
        """The counts since `before` was taken (counters only grow)."""
        earlier = dict(before.buckets)
        return ArmStats(
            answered=self.answered - before.answered, errors=self.errors - before.errors,
            feedback=self.feedback - before.feedback,
            negative_feedback=self.negative_feedback - before.negative_feedback,
            buckets=tuple((le, n - earlier.get(le, 0.0)) for le, n in self.buckets),
        )


@dataclass(frozen=True)
class Thresholds:
    """When a canary is judged and what it must not exceed (from `InferenceSettings`)."""

    min_requests: int = 20
    window_s: float = 60.0
    max_p99_ratio: float = 1.5
    max_error_rate: float = 0.01
    max_negative_feedback_rate: float = 0.5


@dataclass(frozen=True)
class Verdict:
    """The decision and the sentence that explains it."""

    decision: Decision
    reason: str
    figures: dict[str, float] = field(default_factory=dict)


def judge(live: ArmStats, canary: ArmStats, *, elapsed_s: float, limits: Thresholds
          ) -> Verdict:
    """Promote, roll back or keep waiting, from both versions' stats since the start."""
    figures = {
        "canary_answered": float(canary.answered), "live_answered": float(live.answered),
        "canary_p99_s": canary.quantile_s(0.99), "live_p99_s": live.quantile_s(0.99),
        "canary_error_rate": canary.error_rate,
        "canary_negative_feedback_rate": canary.negative_feedback_rate,
        "live_negative_feedback_rate": live.negative_feedback_rate,
    }
    if canary.answered + canary.errors < limits.min_requests:
        if elapsed_s >= limits.window_s:
            return Verdict("rollback", f"only {canary.answered + canary.errors} canary requests "
                           f"in {elapsed_s:.0f} s, fewer than the {limits.min_requests} needed "
                           "to judge it; promote it by hand if it is wanted", figures)
        return Verdict("wait", "too few canary requests yet", figures)
    problems = []
    if canary.error_rate > limits.max_error_rate:
        problems.append(f"error rate {canary.error_rate:.1%} over {limits.max_error_rate:.1%}")
    ratio = figures["canary_p99_s"] / figures["live_p99_s"] if live.answered else math.nan
    if math.isfinite(ratio) and ratio > limits.max_p99_ratio:
        problems.append(f"p99 {figures['canary_p99_s'] * 1000:.0f} ms is {ratio:.2f}x the live "
                        f"version's (limit {limits.max_p99_ratio:.2f}x)")
    if canary.negative_feedback_rate > limits.max_negative_feedback_rate:
        problems.append(f"negative feedback on {canary.negative_feedback_rate:.0%} of "
                        f"{canary.feedback} rated answers (limit "
                        f"{limits.max_negative_feedback_rate:.0%})")
    if problems:
        return Verdict("rollback", "; ".join(problems), figures)
    if elapsed_s < limits.window_s:
        return Verdict("wait", "within limits so far", figures)
    return Verdict("promote", f"{canary.answered} canary answers in {elapsed_s:.0f} s within "
                   "every limit", figures)


def stats_from_metrics(texts: list[str], *, model: str) -> dict[str, ArmStats]:
    """Version -> cumulative stats of `model`, summed over gateways' /metrics texts."""
    totals: dict[str, dict[str, float]] = {}
    buckets: dict[str, dict[float, float]] = {}

    def add(counts: dict[str, float], key: str, value: float) -> None:
        counts[key] = counts.get(key, 0.0) + value

    for text in texts:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                if labels.get("model") != model or "version" not in labels:
                    continue
                version = labels["version"]
                counts = totals.setdefault(version, {})
                if sample.name == f"{LATENCY_METRIC}_bucket":
                    arm = buckets.setdefault(version, {})
                    le = float(labels["le"])
                    arm[le] = arm.get(le, 0.0) + sample.value
                elif sample.name == f"{LATENCY_METRIC}_count":
                    add(counts, "answered", sample.value)
                elif sample.name == f"{ERRORS_METRIC}_total":
                    add(counts, "errors", sample.value)
                elif sample.name == f"{FEEDBACK_METRIC}_total":
                    add(counts, "feedback", sample.value)
                    if labels.get("negative") == "true":
                        add(counts, "negative", sample.value)
    return {
        version: ArmStats(
            answered=int(counts.get("answered", 0)), errors=int(counts.get("errors", 0)),
            feedback=int(counts.get("feedback", 0)),
            negative_feedback=int(counts.get("negative", 0)),
            buckets=tuple(sorted(buckets.get(version, {}).items())),
        )
        for version, counts in totals.items()
    }


class GatewayStats:
    """Per-version counters scraped from the gateways' `/metrics`, summed over them.

    Raises:
        CanaryError: no URL given.
    """

    def __init__(self, metrics_urls: list[str], *, model: str, timeout_s: float = 5.0) -> None:
        if not metrics_urls:
            raise CanaryError("a canary needs at least one gateway /metrics URL to judge it")
        self.urls = metrics_urls
        self.model = model
        self._timeout_s = timeout_s

    def snapshot(self) -> dict[str, ArmStats]:
        """Version (as the gateway labels it) -> its cumulative stats.

        Raises:
            CanaryError: a gateway's /metrics could not be read.
        """
        texts = []
        for url in self.urls:
            try:
                response = httpx.get(url, timeout=self._timeout_s, follow_redirects=True)
                response.raise_for_status()
            except httpx.HTTPError as e:
                raise CanaryError(f"could not read the gateway metrics at {url} ({e}); is "
                                  "`flywheel gateway serve` running?") from e
            texts.append(response.text)
        return stats_from_metrics(texts, model=self.model)
