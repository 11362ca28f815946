"""The stream worker against the real Kafka and ClickHouse of the test stack.

Conservation: every record ends curated, quarantined or error, exactly once by event id,
under normal load and after `kill -9` of a worker mid-stream.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

from deploy.settings import FlywheelSettings
from schemas.chat import ChatEvent
from schemas.envelope import encode
from schemas.feedback import FeedbackEvent
from tests.streams.worker_harness import (
    Produced,
    Topics,
    assert_conserved,
    create_topics,
    landed,
    landed_total,
    produce_conversations,
    start_worker,
    stop_worker,
    wait_for,
)

pytestmark = pytest.mark.integration



def _hostile(topics: Topics) -> list[tuple[str, bytes]]:
    def chat(text: str) -> bytes:
        return encode(ChatEvent(conversation_id="hostile", turn_index=0, role="user",
                                text="placeholder", tenant="acme"), producer="t").replace(
            b'"placeholder"', json.dumps(text).encode())

    wrong_schema = json.dumps({"kind": "chat_event", "schema_version": 1, "producer": "t",
                               "payload": {"event_id": str(uuid.uuid4()), "tenant": "acme",
                                           "text": "mail me at leak@example.com"}}).encode()
    return [
        (topics.chat, b"this is {not json"),
        (topics.chat, wrong_schema),
        (topics.chat, chat("x" * (10 * 1024 * 1024))),
        (topics.chat, b'{"kind": "chat_event", "payload": "\xff\xfe\xfa"}'),
        (topics.chat, chat("pass\u200bword reset please")),
        (topics.chat, chat("an invoice for \u202etxt.exe")),
    ]


HOSTILE_REASONS = ["not_json", "schema_violation", "too_long", "not_utf8",
                   "schema_violation", "schema_violation"]


@pytest.fixture(scope="module")
def normal_run(worker_settings: FlywheelSettings, client: Any, tmp_path_factory: Any
               ) -> tuple[Topics, Produced, dict[str, Any], int]:
    base = f"t_norm_{uuid.uuid4().hex[:8]}"
    topics = create_topics(worker_settings, base)
    produced = produce_conversations(worker_settings, topics, conversations=300,
                                     extra_raw=_hostile(topics))
    log = Path(tmp_path_factory.mktemp("worker")) / "worker.log"
    worker = start_worker(worker_settings, topics, group=base, log=log)
    try:
        outcome = wait_for(client, worker_settings, topics, total=produced.total,
                           workers=[worker])
    finally:
        code = stop_worker(worker)
    return topics, produced, outcome, code


def test_every_record_ends_curated_quarantined_or_error_exactly_once(
    normal_run: tuple[Topics, Produced, dict[str, Any], int],
) -> None:
    _, produced, outcome, _ = normal_run
    assert_conserved(produced, outcome)
    reasons = Counter(r[3] for r in outcome["quarantine"])
    assert reasons["toxic"] >= 10 and reasons["duplicate"] >= 5


def test_hostile_inputs_land_in_quarantine_with_their_reason(
    normal_run: tuple[Topics, Produced, dict[str, Any], int],
) -> None:
    topics, _, outcome, _ = normal_run
    by_offset = {}
    hostile = [r for r in outcome["quarantine"] if r[3] in
               {"not_json", "schema_violation", "too_long", "not_utf8"}]
    for row in hostile:
        by_offset[row[2]] = row[3]
    assert sorted(by_offset.values()) == sorted(HOSTILE_REASONS)


def test_raw_private_data_never_reaches_clickhouse(
    normal_run: tuple[Topics, Produced, dict[str, Any], int], client: Any,
    worker_settings: FlywheelSettings,
) -> None:
    topics, *_ = normal_run
    db = worker_settings.clickhouse.database
    leaks = client.query(
        f"SELECT count() FROM {db}.chat_turns FINAL WHERE source_topic = {{t:String}} AND "
        "(text LIKE '%@example.com%' OR text LIKE '%4111 1111%')",
        parameters={"t": topics.chat}).result_rows[0][0]
    excerpts = " ".join(r[4] for r in normal_run[2]["quarantine"])
    redacted = client.query(
        f"SELECT count() FROM {db}.chat_turns FINAL WHERE source_topic = {{t:String}} "
        "AND redactions['email'] > 0", parameters={"t": topics.chat}).result_rows[0][0]
    assert leaks == 0 and "leak@example.com" not in excerpts and redacted > 0


def test_quarantine_topic_keeps_the_original_bytes(
    normal_run: tuple[Topics, Produced, dict[str, Any], int],
    worker_settings: FlywheelSettings,
) -> None:
    topics, _, outcome, _ = normal_run
    consumer = Consumer({**worker_settings.kafka.client_config(), "group.id": uuid.uuid4().hex,
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topics.quarantine])
    originals = []
    for _ in range(60):
        for message in consumer.consume(500, timeout=0.5):
            if message.error() is None:
                originals.append(json.loads(message.value())["payload"])
        if len(originals) >= len(outcome["quarantine"]):
            break
    consumer.close()
    assert len(originals) >= len(outcome["quarantine"])
    assert any(o["original"] and o["original_truncated"] for o in originals)


def test_feedback_becomes_training_examples(
    normal_run: tuple[Topics, Produced, dict[str, Any], int], client: Any,
    worker_settings: FlywheelSettings,
) -> None:
    _, produced, *_ = normal_run
    db = worker_settings.clickhouse.database
    rows = client.query(
        f"SELECT count(), countIf(prompt != '') FROM {db}.training_examples FINAL "
        "WHERE feedback_event_id IN {ids:Array(UUID)}",
        parameters={"ids": [str(i) for i in produced.feedback_ids]}).result_rows[0]
    assert rows[0] == len(produced.feedback_ids) and rows[1] > 0


def test_worker_stops_cleanly_on_sigterm(
    normal_run: tuple[Topics, Produced, dict[str, Any], int],
) -> None:
    assert normal_run[3] == 0


def test_kill_9_mid_stream_and_restart_loses_and_duplicates_nothing(
    worker_settings: FlywheelSettings, client: Any, tmp_path: Path,
) -> None:
    base = f"t_kill_{uuid.uuid4().hex[:8]}"
    topics = create_topics(worker_settings, base)
    produced = produce_conversations(worker_settings, topics, conversations=1500, seed=11)
    log = tmp_path / "worker.log"
    first = start_worker(worker_settings, topics, group=base, log=log)
    second = start_worker(worker_settings, topics, group=base, log=log)
    replacement = None
    try:
        partial = wait_for(client, worker_settings, topics, total=produced.total // 4,
                           workers=[first, second])
        assert landed_total(partial) < produced.total, "the stream ended before the kill"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        replacement = start_worker(worker_settings, topics, group=base, log=log)
        outcome = wait_for(client, worker_settings, topics, total=produced.total,
                           workers=[second, replacement], timeout_s=180)
    finally:
        for worker in (first, second, replacement):
            if worker is not None:
                stop_worker(worker)
    assert_conserved(produced, outcome)
    db = worker_settings.clickhouse.database
    final, distinct = client.query(
        f"SELECT count(), uniqExact(event_id) FROM {db}.chat_turns FINAL "
        "WHERE source_topic = {t:String}", parameters={"t": topics.chat}).result_rows[0]
    assert final == distinct
    assert landed(client, worker_settings, topics)["curated"]


def test_ingest_rejections_land_in_the_quarantine_table_redacted_and_once(
    worker_settings: FlywheelSettings, client: Any, tmp_path: Path,
) -> None:
    from fastapi.testclient import TestClient

    from streams.ingest import create_app
    from streams.topics import QUARANTINE, ensure_topics

    ensure_topics(worker_settings, [QUARANTINE])
    base = f"t_ingq_{uuid.uuid4().hex[:8]}"
    topics = dataclasses.replace(create_topics(worker_settings, base),
                                 quarantine=QUARANTINE.name)
    marker = f"zebra{uuid.uuid4().hex[:10]}"  # not shaped like a secret: kept in excerpts
    bad_schema = {"conversation_id": "c1", "turn_index": 0, "role": "user",
                  "text": f"{marker} mail me at leak@example.com"}  # no tenant
    with TestClient(create_app(worker_settings)) as ingest:
        headers = {"Authorization": "Bearer flywheel-dev-key"}
        assert ingest.post("/v1/events/chat", json=bad_schema, headers=headers
                           ).status_code == 422
        assert ingest.post("/v1/events/chat", content=f"{marker} {{not json".encode(),
                           headers=headers).status_code == 400
    db = worker_settings.clickhouse.database

    def rows() -> list[tuple[Any, ...]]:
        return client.query(
            f"SELECT source_topic, primary_reason, redacted_excerpt, detail, source_offset "
            f"FROM {db}.quarantine FINAL WHERE source_topic = {{t:String}} "
            f"AND redacted_excerpt LIKE {{m:String}} ORDER BY source_offset",
            parameters={"t": QUARANTINE.name, "m": f"%{marker}%"}).result_rows

    def committed(group: str) -> int:
        from confluent_kafka import TopicPartition

        from streams.ingest_quarantine import GROUP_SUFFIX

        reader = Consumer({**worker_settings.kafka.client_config(),
                           "group.id": group + GROUP_SUFFIX})
        try:
            return int(reader.committed([TopicPartition(QUARANTINE.name, 0)], timeout=10)[0]
                       .offset)
        finally:
            reader.close()

    for group in (base, f"{base}_replay"):  # the second group replays the whole topic
        worker = start_worker(worker_settings, topics, group=group, log=tmp_path / "w.log")
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not (
                    len(found := rows()) == 2 and committed(group) > found[-1][4]):
                assert worker.poll() is None, "the worker exited early; see its log"
                time.sleep(0.5)
        finally:
            assert stop_worker(worker) == 0
    landed_rows = rows()
    assert sorted(r[1] for r in landed_rows) == ["not_json", "schema_violation"]
    assert all("leak@example.com" not in r[2] + r[3] for r in landed_rows)
    assert all("ingest:/v1/events/chat" in r[3] for r in landed_rows)


def test_feedback_waiting_for_its_turn_survives_a_kill_9(
    worker_settings: FlywheelSettings, client: Any, tmp_path: Path,
) -> None:
    base = f"t_pend_{uuid.uuid4().hex[:8]}"
    topics = create_topics(worker_settings, base)
    producer = Producer(worker_settings.kafka.client_config())
    turns = [ChatEvent(conversation_id=f"pend-{i}", turn_index=1, role="assistant",
                       text=f"Here is answer number {i} about exporting reports.",
                       model="m", model_version="v1", tenant="acme") for i in range(5)]
    feedback = [FeedbackEvent(conversation_id=t.conversation_id, turn_event_id=t.event_id,
                              kind="thumbs_up", tenant="acme") for t in turns]
    for event in feedback:
        producer.produce(topics.feedback, encode(event, producer="t"),
                         key=event.conversation_id.encode())
    assert producer.flush(30) == 0
    db = worker_settings.clickhouse.database
    ids = [str(f.event_id) for f in feedback]

    def count(sql: str) -> int:
        return int(client.query(sql, parameters={"ids": ids}).result_rows[0][0])

    log = tmp_path / "worker.log"
    first = start_worker(worker_settings, topics, group=base, log=log)
    try:
        deadline = time.monotonic() + 90
        while count(f"SELECT count() FROM {db}.feedback FINAL WHERE event_id IN "
                    "{ids:Array(UUID)}") < len(ids) and time.monotonic() < deadline:
            time.sleep(0.3)
        time.sleep(1.0)  # the offsets commit right after the last insert of the flush
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    for event in turns:  # the turns arrive only now, after the crash
        producer.produce(topics.chat, encode(event, producer="t"),
                         key=event.conversation_id.encode())
    assert producer.flush(30) == 0
    second = start_worker(worker_settings, topics, group=base, log=log)
    examples_sql = (f"SELECT count() FROM {db}.training_examples FINAL "
                    "WHERE feedback_event_id IN {ids:Array(UUID)}")
    try:
        deadline = time.monotonic() + 90
        while count(examples_sql) < len(ids) and time.monotonic() < deadline:
            assert second.poll() is None, "the worker exited early; see its log"
            time.sleep(0.5)
    finally:
        stop_worker(second)
    assert count(examples_sql) == len(ids)
