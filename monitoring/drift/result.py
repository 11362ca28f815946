"""The outcome of one detector on one pair of windows."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

DriftStatus = Literal["ok", "drift", "insufficient_data"]


@dataclass(frozen=True)
class DriftResult:
    """One evaluation: drift when `statistic > threshold`; NaN statistic when undecided."""

    detector: str
    """What was tested, e.g. `embedding_mmd`, `topic_psi`, `negative_feedback_rate`."""
    statistic: float
    threshold: float
    status: DriftStatus
    n_reference: int
    n_current: int
    p_value: float | None = None
    labels: dict[str, str] = field(default_factory=dict)
    """Scope of the test: tenant, model_version... (`all` when not split)."""
    detail: str = ""

    @property
    def drifted(self) -> bool:
        return self.status == "drift"

    @classmethod
    def insufficient(
        cls, detector: str, *, threshold: float, n_reference: int, n_current: int,
        minimum: int, labels: dict[str, str] | None = None,
    ) -> DriftResult:
        """A result that decides nothing because a window holds fewer than `minimum` rows."""
        return cls(
            detector=detector, statistic=math.nan, threshold=threshold,
            status="insufficient_data", n_reference=n_reference, n_current=n_current,
            labels=dict(labels or {}),
            detail=f"insufficient data: {n_reference} reference and {n_current} current rows, "
            f"need {minimum} in each",
        )

    def with_labels(self, **labels: str) -> DriftResult:
        return DriftResult(
            detector=self.detector, statistic=self.statistic, threshold=self.threshold,
            status=self.status, n_reference=self.n_reference, n_current=self.n_current,
            p_value=self.p_value, labels={**self.labels, **labels}, detail=self.detail,
        )
