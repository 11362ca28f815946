"""Distribution drift of categorical (topic, language) and numeric (length, toxicity) fields.

The statistic is the population stability index (PSI). Its threshold is the usual 0.2,
raised on small windows to the PSI that sampling noise alone reaches with probability
alpha: under no drift, PSI ~ chi2(k - 1) * (1/n + 1/m), so two windows of 50 turns over
10 bins do not page anyone by chance. The Jensen-Shannon divergence is reported beside it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats

from monitoring.drift.result import DriftResult

if TYPE_CHECKING:
    from numpy.typing import NDArray

# Half a count per bin: an empty bin in a small window must not weigh like a vanished
# category (with a tiny epsilon, one empty bin of 60 rows alone pushes PSI above 1).
_PSEUDO_COUNT = 0.5


def population_stability_index(expected: Sequence[float], actual: Sequence[float]) -> float:
    """PSI of two histograms of counts over the same bins, smoothed against empty bins."""
    p = _shares(expected)
    q = _shares(actual)
    return float(np.sum((q - p) * np.log(q / p)))


def jensen_shannon(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Jensen-Shannon divergence in bits, between 0 (same) and 1 (disjoint)."""
    p = _shares(expected)
    q = _shares(actual)
    m = (p + q) / 2
    return float(0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m)))


def _shares(counts: Sequence[float]) -> NDArray[np.float64]:
    values = np.asarray(counts, dtype=np.float64) + _PSEUDO_COUNT
    shares: NDArray[np.float64] = values / values.sum()
    return shares


def psi_threshold(base: float, *, bins: int, n_reference: int, n_current: int,
                  alpha: float) -> float:
    """The larger of `base` and the PSI that noise alone exceeds with probability alpha."""
    noise = stats.chi2.isf(alpha, max(bins - 1, 1)) * (1 / n_reference + 1 / n_current)
    return float(max(base, noise))


def _psi_p_value(psi: float, *, bins: int, n_reference: int, n_current: int) -> float:
    return float(stats.chi2.sf(psi / (1 / n_reference + 1 / n_current), max(bins - 1, 1)))


class CategoricalDriftDetector:
    """PSI of a categorical field's shares (topic, language)."""

    def __init__(self, field: str, *, threshold: float = 0.2, alpha: float = 1e-4,
                 min_rows: int = 50) -> None:
        self.field = field
        self.name = f"{field}_psi"
        self.base_threshold = threshold
        self.alpha = alpha
        self.min_rows = min_rows

    def compare(self, reference: Sequence[str], current: Sequence[str], *,
                labels: dict[str, str] | None = None) -> DriftResult:
        """Compare two samples of category values."""
        n, m = len(reference), len(current)
        if n < self.min_rows or m < self.min_rows:
            return DriftResult.insufficient(
                self.name, threshold=self.base_threshold, n_reference=n, n_current=m,
                minimum=self.min_rows, labels=labels,
            )
        ref_counts, cur_counts = Counter(reference), Counter(current)
        categories = sorted(set(ref_counts) | set(cur_counts))
        expected = [ref_counts[c] for c in categories]
        actual = [cur_counts[c] for c in categories]
        return _result(self.name, expected, actual, base=self.base_threshold, alpha=self.alpha,
                       labels=labels, what=f"{len(categories)} {self.field} values")


class NumericDriftDetector:
    """PSI of a numeric field over quantile bins of the reference (length, toxicity)."""

    def __init__(self, field: str, *, bins: int = 10, threshold: float = 0.2,
                 alpha: float = 1e-4, min_rows: int = 50) -> None:
        self.field = field
        self.name = f"{field}_psi"
        self.bins = bins
        self.base_threshold = threshold
        self.alpha = alpha
        self.min_rows = min_rows

    def compare(self, reference: Sequence[float], current: Sequence[float], *,
                labels: dict[str, str] | None = None) -> DriftResult:
        """Compare two samples of numbers."""
        ref = np.asarray(reference, dtype=np.float64)
        cur = np.asarray(current, dtype=np.float64)
        ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
        if len(ref) < self.min_rows or len(cur) < self.min_rows:
            return DriftResult.insufficient(
                self.name, threshold=self.base_threshold, n_reference=len(ref),
                n_current=len(cur), minimum=self.min_rows, labels=labels,
            )
        # Inner edges at reference quantiles; ties (many equal lengths) merge bins.
        edges = np.unique(np.quantile(ref, np.linspace(0, 1, self.bins + 1)[1:-1]))
        expected = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1)
        actual = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1)
        return _result(self.name, expected.tolist(), actual.tolist(), base=self.base_threshold,
                       alpha=self.alpha, labels=labels,
                       what=f"{len(edges) + 1} bins, current mean {cur.mean():.3g} "
                       f"vs reference {ref.mean():.3g}")


def _result(name: str, expected: list[int], actual: list[int], *, base: float, alpha: float,
            labels: dict[str, str] | None, what: str) -> DriftResult:
    n, m, bins = int(sum(expected)), int(sum(actual)), len(expected)
    psi = population_stability_index(expected, actual)
    threshold = psi_threshold(base, bins=bins, n_reference=n, n_current=m, alpha=alpha)
    p_value = _psi_p_value(psi, bins=bins, n_reference=n, n_current=m)
    js = jensen_shannon(expected, actual)
    return DriftResult(
        detector=name, statistic=psi, threshold=threshold,
        status="drift" if psi > threshold else "ok", n_reference=n, n_current=m,
        p_value=p_value, labels=dict(labels or {}),
        detail=f"PSI={psi:.3f} (threshold {threshold:.3f}), JS={js:.3f} bits over {what}",
    )
