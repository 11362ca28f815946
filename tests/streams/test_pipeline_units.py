"""Cleaning, duplicates and the feedback join as plain functions (no services)."""

from __future__ import annotations

import uuid

from schemas.base import utc_now
from schemas.feedback import FeedbackEvent
from schemas.platform import ReasonCode
from streams.clean import Cleaned, Rejection, clean_text
from streams.dedup import DuplicateWindow
from streams.join import FeedbackJoin, PendingFeedback, TurnContext


def _clean(text: str) -> Cleaned | Rejection:
    return clean_text(text, min_chars=1, max_chars=200)


def test_clean_repairs_mojibake_strips_html_and_collapses_whitespace() -> None:
    result = _clean("<p>It doesnâ€™t   <b>work</b></p>\n\n\n<script>x()</script>")
    assert isinstance(result, Cleaned) and result.text == "It doesn't work"


def test_clean_refuses_bidi_overrides_and_zero_width_characters() -> None:
    for text in ("abc\u202edef", "pass\u200bword"):
        result = _clean(text)
        assert isinstance(result, Rejection)
        assert result.reasons == (ReasonCode.SCHEMA_VIOLATION,)


def test_clean_rejects_empty_and_too_long_text() -> None:
    assert _clean("<br/>  ").reasons == (ReasonCode.EMPTY,)  # type: ignore[union-attr]
    assert _clean("x" * 500).reasons == (ReasonCode.TOO_LONG,)  # type: ignore[union-attr]


def test_duplicate_window_finds_exact_and_near_duplicates_but_not_replays() -> None:
    window = DuplicateWindow(window_records=100, threshold=0.8, min_chars=20, permutations=64)
    text = "the export to csv fails when the report has more than ten thousand rows in it"
    first = uuid.uuid4()
    assert window.check(first, text) is None
    assert window.check(first, text) is None  # the same event again is a replay
    assert window.check(uuid.uuid4(), text.upper()) is ReasonCode.DUPLICATE
    near = text.replace("in it", "in it today")
    assert window.check(uuid.uuid4(), near) is ReasonCode.NEAR_DUPLICATE


def test_duplicate_window_forgets_the_oldest_turns() -> None:
    window = DuplicateWindow(window_records=2, threshold=0.9, min_chars=1000, permutations=64)
    window.check(uuid.uuid4(), "a")
    window.check(uuid.uuid4(), "b")
    window.check(uuid.uuid4(), "c")
    assert window.check(uuid.uuid4(), "a") is None


def _turn(event_id: uuid.UUID) -> TurnContext:
    return TurnContext(event_id, "c1", "acme", "general", "en", "hi?", "hello!", "v1",
                       utc_now())


def _feedback(turn_id: uuid.UUID, **fields: object) -> FeedbackEvent:
    return FeedbackEvent(conversation_id="c1", turn_event_id=turn_id, tenant="acme",
                         **{"kind": "thumbs_up", **fields})  # type: ignore[arg-type]


def test_feedback_that_arrives_before_its_turn_waits_and_joins_later() -> None:
    clock = [0.0]
    join = FeedbackJoin(ttl_s=60, max_turns=10, clock=lambda: clock[0])
    turn_id = uuid.uuid4()
    assert join.feedback(_feedback(turn_id), correction=None) is None
    rows = join.assistant_turn(_turn(turn_id))
    assert len(rows) == 1 and rows[0][10] == "positive" and join.counts["early"] == 1


def test_feedback_whose_turn_never_comes_is_counted_as_an_orphan() -> None:
    clock = [0.0]
    join = FeedbackJoin(ttl_s=60, max_turns=10, clock=lambda: clock[0])
    join.feedback(_feedback(uuid.uuid4()), correction=None)
    clock[0] = 61.0
    assert join.expire() == 1 and join.counts["orphan"] == 1 and join.pending == []


def test_a_correction_becomes_the_target_of_its_example() -> None:
    join = FeedbackJoin(ttl_s=60, max_turns=10)
    turn_id = uuid.uuid4()
    join.assistant_turn(_turn(turn_id))
    row = join.feedback(_feedback(turn_id, kind="correction", correction="Hi there!"),
                        correction="Hi there!")
    assert row is not None and row[9] == "Hi there!" and row[10] == "correction"


def test_feedback_restored_after_a_restart_joins_its_turn_when_it_comes() -> None:
    join = FeedbackJoin(ttl_s=60, max_turns=10, clock=lambda: 0.0)
    turn_id = uuid.uuid4()
    waiting = PendingFeedback(_feedback(turn_id), None, 0.0, ("fb", 1))
    join.restore([waiting])
    rows = join.assistant_turn(_turn(turn_id))
    assert len(rows) == 1 and join.counts["early"] == 1 and join.pending == []


def test_a_replayed_feedback_does_not_wait_twice_and_a_revoked_partition_forgets() -> None:
    join = FeedbackJoin(ttl_s=60, max_turns=10, clock=lambda: 0.0)
    event = _feedback(uuid.uuid4())
    join.restore([PendingFeedback(event, None, 0.0, ("fb", 1))])
    join.feedback(event, correction=None, source=("fb", 1))
    assert len(join.pending) == 1
    join.forget(("fb", 2))
    assert len(join.pending) == 1
    join.forget(("fb", 1))
    assert join.pending == []
