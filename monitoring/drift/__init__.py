"""Drift detectors: each compares a current window with a reference window.

Every detector returns a `DriftResult` whose `statistic` is compared with its
`threshold` (drift when statistic > threshold), so a Prometheus rule reads the same for
all of them. A window too small to decide reports `insufficient_data`, never drift.
"""

from monitoring.drift.changepoint import PageHinkley, RateChangeDetector
from monitoring.drift.distribution import (
    CategoricalDriftDetector,
    NumericDriftDetector,
    jensen_shannon,
    population_stability_index,
)
from monitoring.drift.embedding import (
    EmbeddingDriftDetector,
    MmdTest,
    mmd_permutation_test,
    mmd_scan_test,
)
from monitoring.drift.result import DriftResult, DriftStatus

__all__ = [
    "CategoricalDriftDetector",
    "DriftResult",
    "DriftStatus",
    "EmbeddingDriftDetector",
    "MmdTest",
    "NumericDriftDetector",
    "PageHinkley",
    "RateChangeDetector",
    "jensen_shannon",
    "mmd_permutation_test",
    "mmd_scan_test",
    "population_stability_index",
]
