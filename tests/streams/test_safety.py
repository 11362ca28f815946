"""Toxicity and bias filters hold the precision and recall recorded in BENCHMARKS.md."""

from __future__ import annotations

from deploy.settings import StreamsSettings
from streams.safety import BalanceCaps, SafetyFilter
from tests.streams.safety_eval import evaluate

#: Floors under the figures recorded in BENCHMARKS.md ("Stream safety filters").
FLOORS = {
    "toxic": (0.95, 0.90),
    "identity_attack": (0.95, 0.75),
    "biased": (0.95, 0.85),
}


def test_safety_filters_stay_above_the_recorded_precision_and_recall_floor() -> None:
    figures = evaluate()
    for label, (precision_floor, recall_floor) in FLOORS.items():
        precision, recall = figures[label]
        assert precision >= precision_floor, f"{label} precision {precision:.3f}"
        assert recall >= recall_floor, f"{label} recall {recall:.3f}"
    assert figures["clean_pass_rate"][0] >= 0.95


def test_a_neutral_mention_of_a_protected_group_passes() -> None:
    verdict = SafetyFilter(StreamsSettings()).judge("Are there scholarships for refugees?", 0.1)
    assert verdict.reasons == () and verdict.group == "refugees"


def test_balance_caps_refuse_a_tenant_over_its_share_of_the_window() -> None:
    caps = BalanceCaps(window_s=60, share=0.5, min_records=10, clock=lambda: 0.0)
    for i in range(10):
        assert caps.admit({"tenant": f"t{i % 5}"}) is None
    admitted = [caps.admit({"tenant": "big"}) for _ in range(20)]
    assert "tenant" in admitted and admitted[0] is None
