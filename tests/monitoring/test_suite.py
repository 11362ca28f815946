"""The drift suite over whole windows, with the real offline encoder."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deploy.settings import MonitoringSettings
from monitoring.drift.embedding import SentenceEncoder
from monitoring.evaluate import DriftSuite
from monitoring.windows import WindowData
from tests.monitoring.traffic import ACCOUNT, SPORTS, sentences


def window(texts: list[str], *, topic: str, negative_rate: float = 0.05, seed: int = 0
           ) -> WindowData:
    rng = np.random.default_rng(seed)
    return WindowData(
        user_texts=texts, user_tenants=["acme"] * len(texts), topics=[topic] * len(texts),
        languages=["en"] * len(texts), lengths=[float(len(t)) for t in texts],
        toxicity=list(rng.random(len(texts)) * 0.05),
        answers={"v1": ([f"Sure, here is how {t}" for t in texts],
                        list(rng.random(len(texts)) * 0.05))},
        negative_feedback=list(rng.random(len(texts)) < negative_rate),
        quarantined=list(rng.random(len(texts)) < 0.02),
    )


def never_encode(_texts: Sequence[str]) -> np.ndarray:
    raise AssertionError("the encoder must not run on windows that cannot be decided")


def test_tiny_windows_report_insufficient_data_for_every_detector_without_encoding() -> None:
    suite = DriftSuite(MonitoringSettings(min_window_rows=50), encode=never_encode)
    results = suite.evaluate(window(sentences(ACCOUNT, 10, seed=1), topic="account"),
                             window([], topic="account"))
    assert results
    assert {r.status for r in results} == {"insufficient_data"}


def test_empty_windows_report_insufficient_data() -> None:
    suite = DriftSuite(MonitoringSettings(), encode=never_encode)
    results = suite.evaluate(WindowData(), WindowData())
    assert {r.status for r in results} == {"insufficient_data"}


def test_a_topic_shift_is_drift_in_embeddings_and_topics_but_not_in_feedback() -> None:
    encoder = SentenceEncoder()
    suite = DriftSuite(MonitoringSettings(min_window_rows=40, permutations=200),
                       encode=encoder.encode)
    reference = window(sentences(ACCOUNT, 120, seed=1), topic="account", seed=1)
    same = suite.evaluate(reference, window(sentences(ACCOUNT, 120, seed=2), topic="account",
                                            seed=2))
    shifted = suite.evaluate(reference, window(sentences(SPORTS, 120, seed=3), topic="sports",
                                               seed=3))

    by_name = {r.detector: r for r in same}
    assert by_name["embedding_mmd"].status == "ok"
    assert by_name["topic_psi"].status == "ok"
    drifted = {r.detector: r for r in shifted}
    assert drifted["embedding_mmd"].status == "drift"
    assert drifted["topic_psi"].status == "drift"
    assert drifted["negative_feedback_rate"].status == "ok"
    assert drifted["embedding_mmd"].p_value is not None
    assert drifted["embedding_mmd"].p_value < 1e-6
