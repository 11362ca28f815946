"""Rebuilding the feedback join's waiting feedback from the warehouse after a restart.

Feedback that arrives before its turn waits in memory (`streams.join`). Its record is
curated (a `feedback` row) and its offset committed in the same flush as any other, so
a worker that crashes, or hands the partition to another, would lose the waiting entry
for good: the next owner starts after the committed offset. The `feedback` table is the durable
side: every feedback row of the partition, ingested within the join's TTL, that has no
training example yet is waiting (or its turn was quarantined, which `resolve` settles).
Its arrival time is its `ingested_at`, so the TTL runs on where it left off.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from schemas.feedback import FeedbackEvent, FeedbackKind, FlagReason
from streams.join import PendingFeedback, TurnContext

logger = logging.getLogger(__name__)


#: Ids per lookup query unless the caller says otherwise: a UUID is about 40 bytes of SQL.
LOOKUP_CHUNK_IDS = 1_000


def load_pending(
    client: Any, *, database: str, topic: str, partitions: Iterable[int], ttl_s: float,
    clock: Callable[[], float] = time.monotonic, limit: int = 5_000,
) -> list[PendingFeedback]:
    """The waiting feedback of `topic`'s `partitions`, oldest first; the newest `limit`.

    Raises:
        clickhouse_connect's errors: the warehouse did not answer (the worker cannot start).
    """
    wanted = sorted(set(partitions))
    if not wanted:
        return []
    rows = client.query(
        f"SELECT event_id, conversation_id, turn_event_id, kind, rating, correction, "
        f"flag_reasons, comment, tenant, user_id_hash, ts, source_partition, ingested_at "
        f"FROM {database}.feedback FINAL "
        f"WHERE source_topic = {{t:String}} AND source_partition IN {{p:Array(UInt32)}} "
        f"AND ingested_at >= now64(3) - toIntervalMillisecond({{ttl:UInt64}}) "
        f"AND event_id NOT IN (SELECT feedback_event_id FROM {database}.training_examples "
        f"WHERE ingested_at >= now64(3) - toIntervalMillisecond({{ttl:UInt64}})) "
        f"ORDER BY ingested_at DESC LIMIT {{n:UInt64}}",
        parameters={"t": topic, "p": wanted, "ttl": int(ttl_s * 1000),
                    "n": limit}).result_rows[::-1]
    now_s, now = clock(), datetime.now(UTC)
    pending = []
    for (event_id, conversation, turn_id, kind, rating, correction, flags, comment, tenant,
         user_hash, ts, partition, ingested_at) in rows:
        # Built without validation: the row was validated on its way in, and its texts are
        # redacted copies that need not pass the raw contract again.
        event = FeedbackEvent.model_construct(
            event_id=event_id, conversation_id=conversation, turn_event_id=turn_id,
            kind=FeedbackKind(kind), rating=rating, correction=correction,
            flag_reasons=[FlagReason(f) for f in flags], comment=comment, tenant=tenant,
            user_id_hash=user_hash or None, timestamp=_utc(ts))
        waited_s = max(0.0, (now - _utc(ingested_at)).total_seconds())
        pending.append(PendingFeedback(event, correction, now_s - waited_s,
                                       (topic, int(partition))))
    if pending:
        logger.info("%s: %d feedback events still wait for their turn; restored",
                    topic, len(pending))
    return pending


def lookup_turns(client: Any, *, database: str, ids: list[str],
                 chunk_ids: int = LOOKUP_CHUNK_IDS,
                 ) -> tuple[dict[UUID, TurnContext], set[UUID]]:
    """Curated assistant turns (with their prompts) and quarantined turns among `ids`.

    Looked up `chunk_ids` at a time, so no query's text grows with the waiting set
    (7,000 ids in one `IN` list passed ClickHouse's 256 KiB query limit).

    Raises:
        clickhouse_connect's errors: the warehouse did not answer.
    """
    turns: dict[UUID, TurnContext] = {}
    rejected: set[UUID] = set()
    for start in range(0, len(ids), chunk_ids):
        found, refused = _lookup_chunk(client, database, ids[start:start + chunk_ids],
                                       chunk_ids)
        turns.update(found)
        rejected |= refused
    return turns, rejected


def _lookup_chunk(client: Any, db: str, ids: list[str], chunk_ids: int
                  ) -> tuple[dict[UUID, TurnContext], set[UUID]]:
    rows = client.query(
        f"SELECT event_id, conversation_id, tenant, topic, language, text, model_version, "
        f"ts, turn_index FROM {db}.chat_turns FINAL "
        f"WHERE event_id IN %(ids)s AND role = 'assistant'",
        parameters={"ids": ids}).result_rows
    prompts: dict[str, list[tuple[int, str]]] = {}
    conversations = sorted({r[1] for r in rows})
    # A conversation id may be 128 characters: a quarter of the ids per query.
    step = max(1, chunk_ids // 4)
    for start in range(0, len(conversations), step):
        for conversation, index, text in client.query(
                f"SELECT conversation_id, turn_index, text FROM {db}.chat_turns FINAL "
                f"WHERE conversation_id IN %(c)s AND role = 'user'",
                parameters={"c": conversations[start:start + step]}).result_rows:
            prompts.setdefault(conversation, []).append((index, text))
    turns = {}
    for r in rows:
        earlier = [p for p in prompts.get(r[1], []) if p[0] < r[8]]
        prompt = max(earlier)[1] if earlier else ""
        turns[r[0]] = TurnContext(r[0], r[1], r[2], r[3], r[4], prompt, r[5], r[6], r[7])
    rejected = {r[0] for r in client.query(
        f"SELECT event_id FROM {db}.quarantine FINAL WHERE event_id IN %(ids)s",
        parameters={"ids": ids}).result_rows}
    return turns, rejected


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
