"""The process pool gives the pipeline's answers: same outcome for every record, in order."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime

import pytest

from deploy.settings import FlywheelSettings
from schemas.chat import ChatEvent
from schemas.envelope import encode
from schemas.feedback import FeedbackEvent
from streams.pipeline import BatchResult, Processor
from streams.pool import PreparePool
from streams.rows import Record

WORDS = "the account export report billing invoice refund shipping order plan".split()


def _batch(count: int, *, seed: int) -> list[Record]:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    records: list[Record] = []
    for offset in range(count):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 60)))
        roll = rng.random()
        if roll < 0.05:
            value = b"\xff\xfe not utf-8"
        elif roll < 0.1:
            value = b"{not json"
        elif roll < 0.15:
            value = records[-1].value if records else b"{}"  # an exact duplicate
        else:
            if roll < 0.2:
                text = "you stupid fucking idiot " + text
            elif roll < 0.25:
                text += f" mail me at u{offset}@example.com"
            event = ChatEvent(conversation_id=f"c{offset % 7}", turn_index=offset,
                              role="assistant", text=text, model="m", model_version="v1",
                              tenant=f"t{offset % 3}", timestamp=now)
            value = encode(event, producer="test")
        records.append(Record("chat", offset % 3, offset, None, value))
    for offset in range(count // 10):
        feedback = FeedbackEvent(conversation_id="c1", turn_event_id=uuid.uuid4(),
                                 kind="thumbs_up", tenant="t1", timestamp=now)
        records.append(Record("fb", 0, offset, None, encode(feedback, producer="test")))
    return records


def _outcomes(result: BatchResult) -> list[tuple[object, ...]]:
    return [row[:6] for row in result.ledger]


@pytest.mark.slow
def test_a_pool_gives_every_record_the_outcome_one_process_gives(
        settings: FlywheelSettings) -> None:
    options = settings.streams
    records = _batch(600, seed=7)
    seen: set[object] = set()
    alone = Processor(options, chat_topic="chat", feedback_topic="fb")
    with PreparePool(options, chat_topic="chat", feedback_topic="fb", processes=2) as pool:
        pooled = Processor(options, chat_topic="chat", feedback_topic="fb",
                           prepare=pool.prepare)
        for start in range(0, len(records), 200):  # state carries over between batches
            expected = alone.process(records[start:start + 200])
            got = pooled.process(records[start:start + 200])
            assert _outcomes(got) == _outcomes(expected)
            assert [r[:-1] for r in got.quarantine] == [r[:-1] for r in expected.quarantine]
            assert got.turns == expected.turns
            seen |= {row[4] for row in expected.ledger}
    assert seen == {"curated", "quarantined"}


def test_pool_refuses_zero_processes_and_use_before_open(settings: FlywheelSettings) -> None:
    from streams.errors import WorkerError

    with pytest.raises(ValueError, match="workers_processes=0|plain Preparer"):
        PreparePool(settings.streams, chat_topic="c", feedback_topic="f", processes=0)
    pool = PreparePool(settings.streams, chat_topic="c", feedback_topic="f", processes=1)
    with pytest.raises(WorkerError, match="before open"):
        pool.prepare([])
