"""Replays after a restart follow the ledger, so an event never lands in two tables.

A worker killed mid-flush may have landed some rows of a batch and not others. Its
replacement starts with an empty duplicate window and fresh caps; these tests give a
cold `Processor` the ledger of a warm one and check that every replayed record gets the
outcome it had, where deciding afresh would give another.
"""

from __future__ import annotations

from datetime import UTC, datetime

from deploy.settings import FlywheelSettings, StreamsSettings
from schemas.chat import ChatEvent
from schemas.envelope import encode
from streams.pipeline import BatchResult, Logged, Processor
from streams.rows import Record

TEXT = "How do I export the billing report of last month as a spreadsheet for my team?"


def _record(offset: int, text: str, *, tenant: str = "acme", topic: str = "billing"
            ) -> Record:
    event = ChatEvent(conversation_id=f"c{offset}", turn_index=0, role="user", text=text,
                      tenant=tenant, metadata={"topic": topic}, timestamp=datetime.now(UTC))
    return Record("chat", 0, offset, None, encode(event, producer="test"))


def _processor(options: StreamsSettings) -> Processor:
    return Processor(options, chat_topic="chat", feedback_topic="fb")


def _ledger(result: BatchResult) -> dict[tuple[str, int, int], Logged]:
    return {(t, p, o): Logged(outcome, reason) for t, p, o, _, outcome, reason in result.ledger}


def _outcomes(result: BatchResult) -> list[tuple[str, str]]:
    return [(row[4], row[5]) for row in result.ledger]


def test_a_duplicate_of_a_committed_turn_stays_a_duplicate_after_a_restart(
        settings: FlywheelSettings) -> None:
    records = [_record(0, TEXT), _record(1, TEXT)]
    first = _processor(settings.streams).process(records)
    assert _outcomes(first) == [("curated", ""), ("quarantined", "duplicate")]
    # The crash: offset 0 was committed, offset 1 landed in quarantine but not committed.
    fresh = _processor(settings.streams).process(records[1:])
    assert _outcomes(fresh) == [("curated", "")], "a cold window alone would curate it"
    replay = _processor(settings.streams).process(records[1:], _ledger(first))
    assert _outcomes(replay) == [("quarantined", "duplicate")]
    assert replay.quarantine[0][:6] == first.quarantine[0][:6]  # the same row key
    assert replay.turns == [] and replay.replays == {"followed": 1}


def test_a_turn_logged_as_curated_is_curated_again_and_remembered_by_the_window(
        settings: FlywheelSettings) -> None:
    records = [_record(0, TEXT), _record(1, TEXT), _record(2, TEXT)]
    # The first run saw offset 1 first (offset 0 was evicted from its window, say).
    logged = {("chat", 0, 1): Logged("curated", "")}
    replay = _processor(settings.streams).process(records, logged)
    assert _outcomes(replay) == [("curated", ""), ("curated", ""),
                                 ("quarantined", "duplicate")]
    assert replay.replays == {"followed": 1}


def test_a_turn_logged_over_its_cap_stays_quarantined_with_fresh_counters(
        settings: FlywheelSettings) -> None:
    options = settings.streams.model_copy(update={"cap_min_records": 4, "cap_share": 0.5})
    texts = [f"Question {i}: how do I change plan number {i} on the invoice page now?"
             for i in range(8)]
    records = [_record(i, t, tenant="big" if i % 4 else "small") for i, t in enumerate(texts)]
    first = _processor(options).process(records)
    capped = [o for o, (_, reason) in enumerate(_outcomes(first)) if reason == "over_cap"]
    assert capped, "the test needs a record over its cap"
    tail = records[capped[0]:]
    assert ("quarantined", "over_cap") not in _outcomes(_processor(options).process(tail))
    replay = _processor(options).process(tail, _ledger(first))
    assert _outcomes(replay) == _outcomes(first)[capped[0]:]
    assert replay.replays == {"followed": len(tail)}


def test_an_outcome_a_stateless_stage_now_contradicts_is_counted_as_a_mismatch(
        settings: FlywheelSettings) -> None:
    record = _record(0, TEXT)
    replay = _processor(settings.streams).process(
        [record], {("chat", 0, 0): Logged("quarantined", "toxic")})
    assert _outcomes(replay) == [("curated", "")]
    assert replay.replays == {"mismatch": 1}
