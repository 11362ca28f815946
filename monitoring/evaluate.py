"""One evaluation: every detector on the reference and current windows."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from monitoring.drift import (
    CategoricalDriftDetector,
    DriftResult,
    EmbeddingDriftDetector,
    NumericDriftDetector,
    RateChangeDetector,
)
from monitoring.drift.output import Answers, OutputDriftDetector
from monitoring.windows import WindowData

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from deploy.settings import MonitoringSettings

logger = logging.getLogger(__name__)

Encode = Callable[[Sequence[str]], "NDArray[np.float32]"]
ALL = "all"


class DriftSuite:
    """Every drift detector, configured from the monitoring settings."""

    def __init__(self, settings: MonitoringSettings, *, encode: Encode) -> None:
        self._settings = settings
        self._encode = encode
        alpha, minimum = settings.alpha, settings.min_window_rows
        self.embedding = EmbeddingDriftDetector(
            alpha=alpha, permutations=settings.permutations, min_rows=minimum,
            max_rows=settings.max_window_rows, scan_fractions=settings.embedding_scan_fractions,
            bandwidth_factor=settings.embedding_bandwidth_factor)
        self.categorical = [
            CategoricalDriftDetector(f, threshold=settings.psi_threshold, alpha=alpha,
                                     min_rows=minimum)
            for f in ("topic", "language")
        ]
        self.numeric = [
            NumericDriftDetector(f, bins=settings.length_bins, threshold=settings.psi_threshold,
                                 alpha=alpha, min_rows=minimum)
            for f in ("length", "toxicity")
        ]
        delta, lam = settings.page_hinkley_delta, settings.page_hinkley_threshold
        self.negative_feedback = RateChangeDetector(
            "negative_feedback_rate", delta=delta, threshold=lam, min_rows=minimum)
        self.quarantine = RateChangeDetector("quarantine_rate", delta=delta, threshold=lam,
                                             min_rows=minimum)
        self.output = OutputDriftDetector(
            bins=settings.length_bins, psi_threshold=settings.psi_threshold, alpha=alpha,
            delta=delta, threshold=lam, min_rows=minimum)

    def evaluate(self, reference: WindowData, current: WindowData) -> list[DriftResult]:
        """Run every detector; per tenant too for the embedding test when volumes allow."""
        scope = {"tenant": ALL, "model_version": ALL}
        results = [self._embedding(reference.user_texts, current.user_texts, scope)]
        if self._settings.per_tenant:
            results += self._per_tenant(reference, current)
        for detector in self.categorical:
            results.append(detector.compare(getattr(reference, detector.field + "s"),
                                            getattr(current, detector.field + "s"), labels=scope))
        length_test, toxicity_test = self.numeric
        results.append(length_test.compare(reference.lengths, current.lengths, labels=scope))
        results.append(toxicity_test.compare(reference.toxicity, current.toxicity,
                                             labels=scope))
        results.append(self.negative_feedback.compare(
            reference.negative_feedback, current.negative_feedback, labels=scope))
        results.append(self.quarantine.compare(reference.quarantined, current.quarantined,
                                               labels=scope))
        reference_answers = _all_answers(reference)
        for version, (texts, toxicity) in sorted(current.answers.items()):
            results += self.output.compare(
                reference_answers, Answers(texts, toxicity),
                labels={"tenant": ALL, "model_version": version})
        return results

    def _embedding(self, reference: Sequence[str], current: Sequence[str],
                   labels: dict[str, str]) -> DriftResult:
        minimum = self._settings.min_window_rows
        if len(reference) < minimum or len(current) < minimum:
            # Do not pay for the encoder on a window that cannot be decided.
            return self.embedding.compare(np.zeros((len(reference), 1)),
                                          np.zeros((len(current), 1)), labels=labels)
        limit = self._settings.max_window_rows
        # Windows are read newest first, so the limit keeps the newest turns and the
        # detector's scan of the newest fractions sees the most recent ones.
        return self.embedding.compare(self._encode(list(reference)[:limit]),
                                      self._encode(list(current)[:limit]), labels=labels)

    def _per_tenant(self, reference: WindowData, current: WindowData) -> list[DriftResult]:
        by_tenant_ref = _group(reference.user_texts, reference.user_tenants)
        by_tenant_cur = _group(current.user_texts, current.user_tenants)
        if len(by_tenant_cur) < 2:
            return []  # one tenant: the global test already is the per-tenant test
        minimum = self._settings.min_window_rows
        return [
            self._embedding(by_tenant_ref[tenant], texts,
                            {"tenant": tenant, "model_version": ALL})
            for tenant, texts in sorted(by_tenant_cur.items())
            if len(texts) >= minimum and len(by_tenant_ref.get(tenant, [])) >= minimum
        ]


def _group(texts: Sequence[str], tenants: Sequence[str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for text, tenant in zip(texts, tenants, strict=True):
        grouped[tenant].append(text)
    return grouped


def _all_answers(window: WindowData) -> Answers:
    texts: list[str] = []
    toxicity: list[float] = []
    for version_texts, version_toxicity in window.answers.values():
        texts += version_texts
        toxicity += version_toxicity
    return Answers(texts, toxicity)
