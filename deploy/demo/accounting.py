"""Every event the demo replayed, found in exactly one place in the warehouse.

The demo notes the end offsets of the chat and feedback topics before its traffic starts
and after it stops. Each event in between must be a row of `chat_turns` or `feedback`
(curated), of `quarantine`, or of `stream_errors`, and in one of them only.

Events are counted by `event_id`, distinct: a client that retried after the ingest's 503
(the first send landed late) put one event at two offsets, and the warehouse keeps one
row of it under FINAL, which is right. An event is keyed by its id, or by its topic,
partition and offset when it has none (a record too broken to parse); the stream ledger
gives each processed offset's id, and an offset not processed yet counts as one event
still missing. Bodies the ingest API rejected never reach those topics: they are counted
in `quarantine` by the time they were quarantined.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from streams.topics import CHAT_EVENTS, FEEDBACK_EVENTS

if TYPE_CHECKING:
    from deploy.settings import FlywheelSettings

Offsets = dict[tuple[str, int], int]
TOPICS = (CHAT_EVENTS.name, FEEDBACK_EVENTS.name)


@dataclass(frozen=True)
class Accounting:
    """Where the replayed records went."""

    records: int
    """Records (offsets) in the ranges."""
    events: int
    """Distinct events among them (a retried event at two offsets counts once)."""
    retried: int
    """Records that repeat the event id of another record in the ranges."""
    curated: int
    quarantined: int
    errors: int
    in_two_places: int
    rejected_bodies_quarantined: int

    @property
    def missing(self) -> int:
        return self.events - (self.curated + self.quarantined + self.errors)

    @property
    def balanced(self) -> bool:
        return self.missing == 0 and self.in_two_places == 0


def end_offsets(settings: FlywheelSettings, *, timeout_s: float = 10.0) -> Offsets:
    """The next offset of every partition of the chat and feedback topics."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**settings.kafka.client_config(), "group.id": "flywheel-demo-offsets",
                         "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(timeout=timeout_s)
        offsets: Offsets = {}
        for name in TOPICS:
            for partition in metadata.topics[name].partitions:
                _low, high = consumer.get_watermark_offsets(TopicPartition(name, partition),
                                                            timeout=timeout_s)
                offsets[(name, partition)] = high
        return offsets
    finally:
        consumer.close()


def _ranges_condition(start: Offsets, end: Offsets) -> str:
    parts = [
        f"(source_topic = '{topic}' AND source_partition = {partition} AND "
        f"source_offset >= {start.get((topic, partition), 0)} AND source_offset < {high})"
        for (topic, partition), high in end.items()
        if high > start.get((topic, partition), 0)
    ]
    return " OR ".join(parts) or "0"


#: One key per event: its id, or its position when it has none.
_EVENT_KEY = ("ifNull(toString(event_id), concat(source_topic, ':', toString(source_partition), "
              "':', toString(source_offset)))")


def account(client: Any, *, start: Offsets, end: Offsets, since: datetime) -> Accounting:
    """Count where each event of the offset ranges landed, by distinct event (FINAL)."""
    where = _ranges_condition(start, end)
    records = sum(high - start.get(key, 0) for key, high in end.items())
    placed = f"""
        SELECT {_EVENT_KEY} AS key, 'curated' AS place FROM chat_turns FINAL WHERE {where}
        UNION ALL SELECT {_EVENT_KEY}, 'curated' FROM feedback FINAL WHERE {where}
        UNION ALL SELECT {_EVENT_KEY}, 'quarantined' FROM quarantine FINAL WHERE {where}
        UNION ALL SELECT {_EVENT_KEY}, 'errors' FROM stream_errors FINAL WHERE {where}"""
    places = dict(client.query(
        f"SELECT place, uniqExact(key) FROM ({placed}) GROUP BY place").result_rows)
    twice = client.query(f"""
        SELECT count() FROM (
            SELECT key FROM ({placed}) GROUP BY key HAVING uniqExact(place) > 1
        )""").result_rows[0][0]
    processed, distinct = client.query(
        f"SELECT count(), uniqExact({_EVENT_KEY}) FROM stream_ledger FINAL WHERE {where}",
    ).result_rows[0]
    rejected = client.query(
        "SELECT count() FROM quarantine FINAL WHERE source_topic NOT IN {topics:Array(String)} "
        "AND quarantined_at >= {since:DateTime64(3, 'UTC')}",
        parameters={"topics": list(TOPICS), "since": since}).result_rows[0][0]
    return Accounting(records=records, events=int(distinct) + records - int(processed),
                      retried=int(processed) - int(distinct),
                      curated=int(places.get("curated", 0)),
                      quarantined=int(places.get("quarantined", 0)),
                      errors=int(places.get("errors", 0)), in_two_places=int(twice),
                      rejected_bodies_quarantined=int(rejected))


def wait_until_landed(
    client: Any, *, start: Offsets, end: Offsets, since: datetime, timeout_s: float,
    expected_rejected: int = 0, on_poll: Callable[[Accounting], None] | None = None,
) -> Accounting:
    """Poll `account` until every record landed (or `timeout_s` passed); the last count."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = account(client, start=start, end=end, since=since)
        if on_poll:
            on_poll(result)
        done = result.missing <= 0 and result.rejected_bodies_quarantined >= expected_rejected
        if done or time.monotonic() > deadline:
            return result
        time.sleep(1.0)
