"""The evaluation gate: publish only what is better on new data and does not forget."""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from trainer.evaluate import Metrics

if TYPE_CHECKING:
    from deploy.settings import FlywheelSettings, TrainerSettings
    from trainer.window import Window

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """The gate's decision and the sentence that explains it."""

    passed: bool
    reason: str


def decide(candidate: Metrics, served: Metrics, trainer: TrainerSettings, *,
           base_regression: float | None = None) -> Verdict:
    """Compare a candidate with the served model on the same data.

    Passes when perplexity on the window's validation split drops by at least
    `min_improvement` (relative), perplexity on the regression set rises by at most
    `regression_tolerance` (relative) against the served version and by at most
    `base_regression_tolerance` against the bare base (`base_regression`, when given:
    each version may forget a little, all of them together only that much), and the
    toxicity rate does not rise by more than
    `toxicity_tolerance` beyond chance (`toxicity_alpha`; see `rise_p_value`). BLEU and
    chrF against corrections are reported, not gated: on a handful of corrections they
    are too noisy to veto.
    """
    needed = served.perplexity_new * (1 - trainer.min_improvement)
    if not candidate.perplexity_new < needed:
        return Verdict(False, (
            f"not better on new data: perplexity {candidate.perplexity_new:.2f} vs "
            f"{served.perplexity_new:.2f} served (needs < {needed:.2f})"))
    allowed = served.perplexity_regression * (1 + trainer.regression_tolerance)
    if candidate.perplexity_regression > allowed:
        return Verdict(False, (
            f"forgets: regression perplexity {candidate.perplexity_regression:.2f} vs "
            f"{served.perplexity_regression:.2f} served (allowed <= {allowed:.2f})"))
    if base_regression is not None:
        allowed = base_regression * (1 + trainer.base_regression_tolerance)
        if candidate.perplexity_regression > allowed:
            return Verdict(False, (
                f"forgets over versions: regression perplexity "
                f"{candidate.perplexity_regression:.2f} vs {base_regression:.2f} of the base "
                f"(allowed <= {allowed:.2f}, trainer.base_regression_tolerance)"))
    if candidate.toxicity_rate is not None and served.toxicity_rate is not None:
        limit = served.toxicity_rate + trainer.toxicity_tolerance
        if candidate.toxicity_rate > limit:
            p_value = rise_p_value(candidate.toxic_generations, candidate.generations,
                                   served.toxic_generations, served.generations)
            if p_value <= trainer.toxicity_alpha:
                return Verdict(False, (
                    f"more toxic: {candidate.toxicity_rate:.3f} of generations vs "
                    f"{served.toxicity_rate:.3f} served (allowed <= {limit:.3f}; "
                    f"p = {p_value:.3f} by chance)"))
            logger.info("toxicity %.3f vs %.3f served is within chance (p = %.3f > %.3f)",
                        candidate.toxicity_rate, served.toxicity_rate, p_value,
                        trainer.toxicity_alpha)
    extra = ""
    if candidate.chrf is not None and served.chrf is not None:
        extra = f"; chrF {candidate.chrf:.1f} vs {served.chrf:.1f}"
    return Verdict(True, (
        f"better on new data: perplexity {candidate.perplexity_new:.2f} vs "
        f"{served.perplexity_new:.2f}; regression {candidate.perplexity_regression:.2f} vs "
        f"{served.perplexity_regression:.2f}{extra}"))


def rise_p_value(toxic: int, total: int, served_toxic: int, served_total: int) -> float:
    """How likely chance alone gives the candidate `toxic` or more of the flagged generations.

    One-sided Fisher exact test: of the `toxic + served_toxic` flagged generations among
    both models' `total + served_total`, the probability that `toxic` or more fall to the
    candidate's share if both models were equally toxic (the hypergeometric tail). 1.0
    when there is nothing to compare.
    """
    flagged, everything = toxic + served_toxic, total + served_total
    if total <= 0 or served_total <= 0 or toxic <= 0:
        return 1.0
    ways = math.comb(everything, total)
    tail = sum(math.comb(flagged, k) * math.comb(everything - flagged, total - k)
               for k in range(toxic, min(flagged, total) + 1))
    return tail / ways


def comparison_metrics(candidate: Metrics, served: Metrics, *, base_regression: float | None,
                       candidate_prefix: str = "") -> dict[str, float]:
    """What a comparison measured, as one map: the candidate's metrics (keys after
    `candidate_prefix`), the served version's (`served_`), and the bare base's regression
    perplexity (`base_perplexity_regression`) when it was measured."""
    metrics = {f"{candidate_prefix}{k}": v for k, v in candidate.as_dict().items()}
    metrics.update({f"served_{k}": v for k, v in served.as_dict().items()})
    if base_regression is not None:
        metrics["base_perplexity_regression"] = base_regression
    return metrics


def record_evaluation(
    client: Any, settings: FlywheelSettings, *, window: Window, candidate_version: int,
    baseline_version: int | None, candidate: Metrics, served: Metrics, verdict: Verdict,
    base_regression: float | None = None,
) -> uuid.UUID:
    """Write one row to the evaluations table, whatever the verdict."""
    evaluation_id = uuid.uuid4()
    metrics = comparison_metrics(candidate, served, base_regression=base_regression,
                                 candidate_prefix="candidate_")
    row = [
        evaluation_id, settings.model.name, candidate_version, baseline_version,
        window.start, window.end, candidate.perplexity_new, served.perplexity_new,
        candidate.perplexity_regression, served.perplexity_regression,
        candidate.bleu, candidate.chrf, candidate.toxicity_rate, metrics,
        verdict.passed, verdict.reason, datetime.now(UTC),
    ]
    client.insert(
        f"{settings.clickhouse.database}.evaluations", [row],
        column_names=["evaluation_id", "model", "candidate_version", "baseline_version",
                      "window_start", "window_end", "perplexity_new", "baseline_perplexity_new",
                      "perplexity_regression", "baseline_perplexity_regression", "bleu", "chrf",
                      "toxicity_rate", "metrics", "passed", "reason", "evaluated_at"],
    )
    logger.info("evaluation %s of %s v%d: %s (%s)", evaluation_id, settings.model.name,
                candidate_version, "passed" if verdict.passed else "rejected", verdict.reason)
    return evaluation_id
