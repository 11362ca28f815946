"""Windows from the real ClickHouse: quarantine, feedback, dedup, caps and the split."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from deploy.settings import FlywheelSettings
from tests.trainer.synthetic import TURN_COLUMNS, billing_pairs, turn_rows
from trainer.errors import EmptyWindowError, TrainerConfigError
from trainer.window import Example, latest_closed_window, read_window, split_by_conversation

START = datetime(2031, 5, 1, 10, tzinfo=UTC)
END = START + timedelta(hours=1)


def _example(i: int, conversation: str) -> Example:
    return Example(str(i), conversation, "t", f"p{i}", f"r{i}", f"r{i}", "", 1.0, START)


def test_split_never_puts_one_conversation_in_both_splits() -> None:
    rows = [_example(i, f"c{i % 13}") for i in range(100)]
    train, validation = split_by_conversation(rows, validation_fraction=0.2, seed=3)
    assert {r.conversation_id for r in train}.isdisjoint({r.conversation_id for r in validation})
    assert len(train) + len(validation) == 100 and validation and train


def test_two_conversations_always_give_both_splits() -> None:
    rows = [_example(0, "a"), _example(1, "b")]
    train, validation = split_by_conversation(rows, validation_fraction=0.01, seed=0)
    assert len(train) == 1 and len(validation) == 1


def test_latest_closed_window_is_aligned_and_waits_for_the_grace_period() -> None:
    now = datetime(2031, 5, 1, 11, 0, 30, tzinfo=UTC)
    assert latest_closed_window(now, window_s=3600, grace_s=60) == (
        datetime(2031, 5, 1, 9, tzinfo=UTC), datetime(2031, 5, 1, 10, tzinfo=UTC))
    assert latest_closed_window(now, window_s=3600, grace_s=0)[1] == datetime(
        2031, 5, 1, 11, tzinfo=UTC)


def test_reading_a_window_with_its_end_before_its_start_is_refused_before_any_query(
    trainer_settings: FlywheelSettings,
) -> None:
    with pytest.raises(TrainerConfigError, match="empty"):
        read_window(None, trainer_settings, END, START)


@pytest.mark.integration
def test_window_query_never_returns_quarantined_rows_and_never_splits_a_conversation(
    warehouse: Any, trainer_settings: FlywheelSettings,
) -> None:
    db = trainer_settings.clickhouse.database
    pairs = billing_pairs(40, seed=1)
    rows, answers = turn_rows(pairs, start=START, topic="billing", per_conversation=4)
    outside, _ = turn_rows(billing_pairs(4, seed=2), start=END, topic="billing",
                           conversation_prefix="late")
    warehouse.insert(f"{db}.chat_turns", rows + outside, column_names=TURN_COLUMNS)
    # A replay of the same rows collapses under FINAL.
    warehouse.insert(f"{db}.chat_turns", rows[:8], column_names=TURN_COLUMNS)
    quarantined = answers[:3]
    warehouse.insert(f"{db}.quarantine",
                     [[uuid.uuid4(), q, "acme", "flywheel.chat.events", 0, i, ["toxic"], "toxic",
                       START] for i, q in enumerate(quarantined)],
                     column_names=["record_id", "event_id", "tenant", "source_topic",
                                   "source_partition", "source_offset", "reasons",
                                   "primary_reason", "quarantined_at"])
    correction_turn, disliked_turn = answers[10], answers[11]
    warehouse.insert(f"{db}.feedback", [
        [uuid.uuid4(), "c2", correction_turn, "correction", "The corrected answer.", True, START],
        [uuid.uuid4(), "c2", disliked_turn, "thumbs_down", None, True, START],
    ], column_names=["event_id", "conversation_id", "turn_event_id", "kind", "correction",
                     "negative", "ts"])

    window = read_window(warehouse, trainer_settings, START, END)

    returned = {e.id for e in window.train + window.validation + window.negatives}
    assert returned.isdisjoint({str(q) for q in quarantined})
    assert {e.conversation_id for e in window.train}.isdisjoint(
        {e.conversation_id for e in window.validation})
    assert not any(e.conversation_id.startswith("late") for e in window.train + window.validation)
    assert [e.id for e in window.negatives] == [str(disliked_turn)]
    corrected = [e for e in window.train + window.validation if e.id == str(correction_turn)]
    assert corrected and corrected[0].target == "The corrected answer."
    expected = {(p, "The corrected answer." if i == 10 else a)
                for i, (p, a) in enumerate(pairs) if i >= 3 and i != 11}
    distinct = len(expected)
    assert len(window.train) + len(window.validation) == distinct
    snapshot = window.snapshot
    assert snapshot.train_rows == len(window.train)
    assert "FINAL" in snapshot.query and len(snapshot.content_sha256) == 64
    assert read_window(warehouse, trainer_settings, START, END).snapshot == snapshot


@pytest.mark.integration
def test_a_window_without_data_raises_an_error_that_says_what_to_do(
    warehouse: Any, trainer_settings: FlywheelSettings,
) -> None:
    with pytest.raises(EmptyWindowError, match="wider window"):
        read_window(warehouse, trainer_settings, START, END)


@pytest.mark.integration
def test_each_topic_is_capped(warehouse: Any, trainer_settings: FlywheelSettings) -> None:
    db = trainer_settings.clickhouse.database
    rows, _ = turn_rows(billing_pairs(30, seed=4), start=START, topic="billing")
    other, _ = turn_rows([(f"q{i}", f"a{i}") for i in range(6)], start=START, topic="other",
                         conversation_prefix="o")
    warehouse.insert(f"{db}.chat_turns", rows + other, column_names=TURN_COLUMNS)
    capped = trainer_settings.model_copy(update={
        "trainer": trainer_settings.trainer.model_copy(update={"max_examples_per_topic": 5})})
    window = read_window(warehouse, capped, START, END)
    topics = [e.topic for e in window.train + window.validation]
    assert topics.count("billing") == 5 and topics.count("other") == 5
    assert window.dropped["over_cap"] > 0
