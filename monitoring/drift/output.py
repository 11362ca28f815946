"""Model-output drift: answer length, refusal rate and answer toxicity, per model version."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from monitoring.drift.changepoint import RateChangeDetector
from monitoring.drift.distribution import NumericDriftDetector
from monitoring.drift.result import DriftResult

# Phrases a chat model uses when it declines; matched at the start of an answer's sentences.
_REFUSAL = re.compile(
    r"\b(i('| a)?m sorry,? but|i can(no|')t (help|assist|do|answer|provide)|i cannot|"
    r"i am (not able|unable) to|i('| a)?m (not able|unable) to|as an ai\b|i won'?t be able to)",
    re.IGNORECASE,
)


def is_refusal(answer: str) -> bool:
    """True when an answer declines the request ("I'm sorry, but I can't help with that")."""
    return bool(_REFUSAL.search(answer[:300]))


@dataclass(frozen=True)
class Answers:
    """Assistant turns of one window: their text and toxicity scores."""

    texts: Sequence[str]
    toxicity: Sequence[float]


class OutputDriftDetector:
    """Three tests of one model version's answers against the reference window's answers."""

    def __init__(self, *, bins: int = 10, psi_threshold: float = 0.2, alpha: float = 1e-4,
                 delta: float = 0.1, threshold: float = 35.0, min_rows: int = 50) -> None:
        self._length = NumericDriftDetector("answer_length", bins=bins, threshold=psi_threshold,
                                            alpha=alpha, min_rows=min_rows)
        self._toxicity = NumericDriftDetector("answer_toxicity", bins=bins,
                                              threshold=psi_threshold, alpha=alpha,
                                              min_rows=min_rows)
        self._refusals = RateChangeDetector("refusal_rate", delta=delta, threshold=threshold,
                                            min_rows=min_rows)

    def compare(self, reference: Answers, current: Answers, *,
                labels: dict[str, str] | None = None) -> list[DriftResult]:
        """Length and toxicity PSI, and a change in the refusal rate."""
        return [
            self._length.compare([len(t) for t in reference.texts],
                                 [len(t) for t in current.texts], labels=labels),
            self._toxicity.compare(reference.toxicity, current.toxicity, labels=labels),
            self._refusals.compare([is_refusal(t) for t in reference.texts],
                                   [is_refusal(t) for t in current.texts], labels=labels),
        ]
