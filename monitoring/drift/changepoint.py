"""Change detection on event rates (negative feedback, quarantine) with Page-Hinkley.

`river` would provide this, but no release of it installs beside our pins (river >= 0.24
needs numpy >= 2.3 while nvidia-pytriton needs numpy < 2; river 0.23 needs pandas < 3),
so the test is implemented here. Observations are standardized by the reference rate,
so `delta` and `threshold` are in standard deviations and one setting serves every
rate; the chance of a false alarm over a stationary run is about exp(-2 delta lambda).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from monitoring.drift.result import DriftResult


class PageHinkley:
    """Two-sided Page-Hinkley test for a shift of the mean away from `mean`."""

    def __init__(self, *, mean: float, std: float, delta: float = 0.1,
                 threshold: float = 35.0) -> None:
        if std <= 0:
            raise ValueError("std must be positive; smooth a zero rate before standardizing")
        self.mean = mean
        self.std = std
        self.delta = delta
        self.threshold = threshold
        self._up = 0.0
        self._down = 0.0
        self.statistic = 0.0
        self.count = 0
        self.detected_at: int | None = None

    def update(self, value: float) -> bool:
        """Add one observation; True once a change has been detected."""
        z = (value - self.mean) / self.std
        self._up = max(0.0, self._up + z - self.delta)
        self._down = max(0.0, self._down - z - self.delta)
        self.statistic = max(self._up, self._down)
        self.count += 1
        if self.detected_at is None and self.statistic > self.threshold:
            self.detected_at = self.count
        return self.detected_at is not None


class RateChangeDetector:
    """Did the rate of a boolean outcome change in the current window, against the reference?

    The reference gives the rate (smoothed, so a rate of zero still has a spread); the
    current window's outcomes, in time order, run through Page-Hinkley. `statistic` is the
    largest Page-Hinkley value reached in the current window.
    """

    def __init__(self, name: str, *, delta: float = 0.1, threshold: float = 35.0,
                 min_rows: int = 50) -> None:
        self.name = name
        self.delta = delta
        self.threshold = threshold
        self.min_rows = min_rows

    def compare(self, reference: Sequence[bool], current: Sequence[bool], *,
                labels: dict[str, str] | None = None) -> DriftResult:
        """Compare the outcomes of the current window (in time order) with the reference."""
        n, m = len(reference), len(current)
        if n < self.min_rows or m < self.min_rows:
            return DriftResult.insufficient(
                self.name, threshold=self.threshold, n_reference=n, n_current=m,
                minimum=self.min_rows, labels=labels,
            )
        rate = (sum(reference) + 0.5) / (n + 1)
        test = PageHinkley(mean=rate, std=math.sqrt(rate * (1 - rate)), delta=self.delta,
                           threshold=self.threshold)
        peak = 0.0
        for outcome in current:
            test.update(1.0 if outcome else 0.0)
            peak = max(peak, test.statistic)
        current_rate = sum(current) / m
        return DriftResult(
            detector=self.name, statistic=peak, threshold=self.threshold,
            status="drift" if peak > self.threshold else "ok", n_reference=n, n_current=m,
            labels=dict(labels or {}),
            detail=f"rate {current_rate:.3%} now vs {rate:.3%} in the reference"
            + (f"; change detected after {test.detected_at} events" if test.detected_at else ""),
        )
