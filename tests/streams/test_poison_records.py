"""Poison records against the real Kafka and ClickHouse: quarantined alone, never a crash loop.

A poison record is valid by its contract but its row cannot be stored (today: a
`prompt_tokens` over UInt32, which the contract does not bound), or it carries text
clickhouse-connect cannot encode (a lone surrogate). Either once stopped the worker for
good: the batch failed every retry, the worker exited, and its restart read the same
record again.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from deploy.settings import FlywheelSettings
from schemas.chat import ChatEvent
from schemas.envelope import encode
from tests.streams.worker_harness import (
    Produced,
    assert_conserved,
    committed_offsets,
    create_topics,
    produce_conversations,
    start_worker,
    stop_worker,
    wait_for,
)

pytestmark = pytest.mark.integration



def test_a_record_its_table_refuses_is_quarantined_alone_and_the_partition_moves_on(
    worker_settings: FlywheelSettings, client: Any, tmp_path: Path,
) -> None:
    base = f"t_poison_{uuid.uuid4().hex[:8]}"
    topics = create_topics(worker_settings, base, partitions=1)
    before = produce_conversations(worker_settings, topics, conversations=40, seed=21)
    poison = ChatEvent(conversation_id="poison", turn_index=0, role="user",
                       text="How many tokens did this prompt take", tenant="acme",
                       prompt_tokens=2**40)  # valid by the contract; UInt32 in the table
    producer = Producer(worker_settings.kafka.client_config())
    producer.produce(topics.chat, encode(poison, producer="t"), key=b"poison")
    assert producer.flush(30) == 0
    after = produce_conversations(worker_settings, topics, conversations=40, seed=22)
    produced = Produced(chat_ids=before.chat_ids + [poison.event_id] + after.chat_ids,
                        feedback_ids=before.feedback_ids + after.feedback_ids)
    worker = start_worker(worker_settings, topics, group=base, log=tmp_path / "worker.log")
    try:
        outcome = wait_for(client, worker_settings, topics, total=produced.total,
                           workers=[worker])
        # The offsets commit right after the flush's inserts; wait for them, not a time.
        deadline = time.monotonic() + 30
        while (committed_offsets(worker_settings, base, topics.chat, partitions=1)[0]
               < len(produced.chat_ids) and time.monotonic() < deadline):
            time.sleep(0.3)
        assert worker.poll() is None, "the worker exited; see its log"
    finally:
        code = stop_worker(worker)
    assert code == 0
    assert_conserved(produced, outcome)
    [row] = [r for r in outcome["quarantine"] if r[0] == poison.event_id]
    assert row[3] == "unstorable"
    assert poison.event_id not in outcome["curated"]
    db = worker_settings.clickhouse.database
    ledger = client.query(
        f"SELECT outcome, reason FROM {db}.stream_ledger FINAL WHERE source_topic = "
        "{t:String} AND source_offset = {o:UInt64}",
        parameters={"t": topics.chat, "o": row[2]}).result_rows
    assert ledger == [("quarantined", "unstorable")]
    detail = client.query(
        f"SELECT detail FROM {db}.quarantine FINAL WHERE event_id = {{e:UUID}}",
        parameters={"e": str(poison.event_id)}).result_rows[0][0]
    assert "chat_turns" in detail
    # Everything after the poison record on its partition landed and was committed.
    assert committed_offsets(worker_settings, base, topics.chat, partitions=1)[0] == len(
        produced.chat_ids)


def test_an_ingest_rejection_with_a_lone_surrogate_lands_and_never_stops_the_worker(
    worker_settings: FlywheelSettings, client: Any, tmp_path: Path,
) -> None:
    from fastapi.testclient import TestClient

    from streams.ingest import create_app
    from streams.ingest_quarantine import GROUP_SUFFIX
    from streams.topics import QUARANTINE, ensure_topics

    ensure_topics(worker_settings, [QUARANTINE])
    base = f"t_surr_{uuid.uuid4().hex[:8]}"
    topics = dataclasses.replace(create_topics(worker_settings, base),
                                 quarantine=QUARANTINE.name)
    marker = f"zebra{uuid.uuid4().hex[:10]}"
    # The body as the issue sent it: JSON's \ud800 escape decodes to a lone surrogate.
    body = ('{"conversation_id":"c","turn_index":0,"role":"user","text":"' + marker
            + '","tenant":"\\ud800"}').encode()
    first = _end_of(worker_settings, QUARANTINE.name)
    with TestClient(create_app(worker_settings)) as ingest:
        answer = ingest.post("/v1/events/chat", content=body,
                             headers={"Authorization": "Bearer flywheel-dev-key",
                                      "Content-Type": "application/json"})
        assert 400 <= answer.status_code < 500
    end = _end_of(worker_settings, QUARANTINE.name)
    assert end > first, "the ingest quarantined nothing"
    db = worker_settings.clickhouse.database

    def rows() -> list[tuple[Any, ...]]:
        return client.query(
            f"SELECT tenant, redacted_excerpt, primary_reason FROM {db}.quarantine FINAL "
            f"WHERE source_topic = {{t:String}} AND source_offset >= {{a:UInt64}} "
            f"AND source_offset < {{b:UInt64}}",
            parameters={"t": QUARANTINE.name, "a": first, "b": end}).result_rows

    # The second group reads the topic from the start, as a restarted worker would.
    for group in (base, f"{base}_again"):
        worker = start_worker(worker_settings, topics, group=group, log=tmp_path / "w.log")
        try:
            deadline = time.monotonic() + 90
            while (len(rows()) < end - first or committed_offsets(
                    worker_settings, group + GROUP_SUFFIX, QUARANTINE.name, partitions=1)[0]
                    < end) and time.monotonic() < deadline:
                assert worker.poll() is None, "the worker exited; see its log"
                time.sleep(0.5)
            assert worker.poll() is None, "the worker exited; see its log"
        finally:
            assert stop_worker(worker) == 0
    [(tenant, excerpt, reason)] = rows()
    assert "\ud800" not in tenant
    # Landed redacted (the ingest calls a lone surrogate not JSON it can store), or set
    # aside as unstorable when its row cannot be built at all.
    assert (reason in ("not_json", "schema_violation") and marker in excerpt) \
        or reason == "unstorable"


def _end_of(settings: FlywheelSettings, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    reader = Consumer({**settings.kafka.client_config(), "group.id": uuid.uuid4().hex})
    try:
        return int(reader.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1])
    finally:
        reader.close()
