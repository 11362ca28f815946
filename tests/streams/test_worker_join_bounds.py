"""Bounded work in the feedback join: chunked lookups, a capped waiting set, refusals.

About 7,000 feedback events for unknown turns once put every waiting id into one SQL
text, past ClickHouse's 256 KiB query limit; the error was not caught, and a restarted
worker loaded the same waiting set and crashed again until `join_ttl_s` passed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings
from schemas.chat import ChatEvent
from schemas.envelope import encode
from schemas.feedback import FeedbackEvent
from streams.join import FeedbackJoin, PendingFeedback
from streams.join_state import lookup_turns
from streams.pipeline import Processor
from streams.rows import CHAT_TURN_COLUMNS, Record, chat_turn_row
from tests.conftest import migrated_database, with_database


def _orphans(count: int) -> list[FeedbackEvent]:
    return [FeedbackEvent(conversation_id=f"orphan-{i}", turn_event_id=uuid.uuid4(),
                          kind="thumbs_up", tenant="acme") for i in range(count)]


@pytest.fixture
def warehouse(running: Callable[..., Supervisor], settings: FlywheelSettings
              ) -> Iterator[tuple[Any, str]]:
    running("clickhouse")
    scoped = with_database(settings, f"t_join_{uuid.uuid4().hex[:8]}")
    with migrated_database(scoped) as client:
        yield client, scoped.clickhouse.database


@pytest.mark.integration
def test_7000_waiting_ids_are_looked_up_in_bounded_queries_and_the_known_turn_is_found(
    warehouse: tuple[Any, str],
) -> None:
    client, database = warehouse
    turn = ChatEvent(conversation_id="known", turn_index=1, role="assistant",
                     text="Reset it from the account page.", model="m", model_version="v1",
                     tenant="acme")
    row = chat_turn_row(turn, Record("t_chat", 0, 0, None, b""), text=turn.text,
                        language="en", topic="general", toxicity=0.0, redactions={})
    client.insert(f"{database}.chat_turns", [row], column_names=CHAT_TURN_COLUMNS)
    ids = [str(f.turn_event_id) for f in _orphans(7000)] + [str(turn.event_id)]
    turns, rejected = lookup_turns(client, database=database, ids=sorted(ids))
    assert list(turns) == [turn.event_id] and rejected == set()
    assert turns[turn.event_id].response == turn.text


def test_feedback_over_the_waiting_cap_is_quarantined_as_orphan_feedback(
    settings: FlywheelSettings,
) -> None:
    options = settings.streams.model_copy(update={"join_max_pending": 100})
    processor = Processor(options, chat_topic="chat", feedback_topic="fb")
    records = [Record("fb", 0, i, None, encode(event, producer="t"))
               for i, event in enumerate(_orphans(150))]
    result = processor.process(records)
    assert len(result.feedback) == 100 and len(processor.join.pending) == 100
    reasons = [row[7] for row in result.quarantine]
    assert reasons == ["orphan_feedback"] * 50
    assert "join_max_pending" in result.quarantine[0][9]
    assert [r[4] for r in result.ledger].count("quarantined") == 50


def test_a_replay_refuses_again_only_what_was_refused_before(
    settings: FlywheelSettings,
) -> None:
    from streams.pipeline import Logged

    options = settings.streams.model_copy(update={"join_max_pending": 1})
    events = _orphans(2)
    records = [Record("fb", 0, i, None, encode(e, producer="t")) for i, e in enumerate(events)]
    first = Processor(options, chat_topic="chat", feedback_topic="fb").process(records)
    logged = {("fb", 0, r[2]): Logged(r[4], r[5]) for r in first.ledger}
    # A cold worker, and the waiting set already full with other feedback: the ledger wins.
    cold = Processor(options, chat_topic="chat", feedback_topic="fb")
    cold.process([Record("fb", 1, 0, None, encode(_orphans(1)[0], producer="t"))])
    replay = cold.process(records, logged)
    assert [r[4:6] for r in replay.ledger] == [r[4:6] for r in first.ledger]
    assert replay.replays["followed"] == 2


def test_a_restore_keeps_the_newest_waiting_feedback_up_to_the_cap() -> None:
    join = FeedbackJoin(ttl_s=3600, max_turns=1000, max_pending=100)
    items = [PendingFeedback(event, None, float(i), ("fb", 0))
             for i, event in enumerate(_orphans(150))]
    join.restore(items)
    assert [p.event.event_id for p in join.pending] == [i.event.event_id for i in items[50:]]
    assert join.counts["orphan"] == 50


def test_feedback_for_a_known_turn_is_never_refused_by_a_full_waiting_set() -> None:
    from streams.join import TurnContext

    join = FeedbackJoin(ttl_s=3600, max_turns=1000, max_pending=1)
    join.restore([PendingFeedback(_orphans(1)[0], None, 0.0)])
    turn = TurnContext(uuid.uuid4(), "c", "acme", "general", "en", "", "answer", "v1",
                       datetime.now(UTC))
    join.assistant_turn(turn)
    feedback = FeedbackEvent(conversation_id="c", turn_event_id=turn.event_id,
                             kind="thumbs_up", tenant="acme")
    assert join.refusal(feedback) is None
    assert join.feedback(feedback, correction=None) is not None
