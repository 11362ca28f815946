"""Toxicity and bias filters hold the precision and recall recorded in BENCHMARKS.md."""

from __future__ import annotations

from deploy.settings import StreamsSettings
from streams.safety import UNLABELLED, BalanceCaps, SafetyFilter
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


def test_balance_caps_never_cap_unlabelled_traffic_or_a_dimension_with_one_value() -> None:
    caps = BalanceCaps(window_s=60, share=0.5, min_records=10, clock=lambda: 0.0)
    # One tenant, no topic, no group: the gateway's traffic. Nothing to balance against.
    assert all(caps.admit({"topic": UNLABELLED, "tenant": "gateway", "group": UNLABELLED})
               is None for _ in range(200))
    # A second tenant appears: from now on the first one is over its share.
    assert caps.admit({"topic": UNLABELLED, "tenant": "other", "group": UNLABELLED}) is None
    assert caps.admit({"topic": UNLABELLED, "tenant": "gateway", "group": UNLABELLED}) == "tenant"


def test_balance_caps_start_again_with_each_window() -> None:
    now = [0.0]
    caps = BalanceCaps(window_s=60, share=0.5, min_records=2, clock=lambda: now[0])
    for tenant in ("a", "b", "a", "a"):
        caps.admit({"tenant": tenant})
    assert caps.admit({"tenant": "a"}) == "tenant"
    now[0] = 61.0
    assert caps.admit({"tenant": "a"}) is None
