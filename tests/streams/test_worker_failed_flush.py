"""A flush that fails never lets a later offset be committed past the rows it did not store.

The failure here is real: the `chat_turns` table is renamed away under a running worker,
so ClickHouse answers and refuses every insert into it (`UNKNOWN_TABLE`, a fault of the
table, not of a row: no bisection can help). The worker gives up and exits. Before the
fix its shutdown path (`_close` -> `on_revoke` -> `_flush_and_commit`) then committed the
offsets of records read after the failed batch, whose rows were never stored.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings
from tests.conftest import migrated_database, with_database
from tests.streams.worker_harness import (
    Produced,
    assert_conserved,
    committed_offsets,
    create_topics,
    fast_worker_settings,
    landed_total,
    produce_conversations,
    start_worker,
    stop_worker,
    wait_for,
)

pytestmark = pytest.mark.integration

PARTITIONS = 3


@pytest.fixture
def scoped(running: Callable[..., Supervisor], settings: FlywheelSettings
           ) -> Iterator[tuple[FlywheelSettings, Any]]:
    running("kafka", "clickhouse")
    options = fast_worker_settings(with_database(settings, f"t_ff_{uuid.uuid4().hex[:8]}"),
                                   sink_retry_max=1, sink_backoff_max_s=0.5)
    with migrated_database(options) as client:
        yield options, client


def _stored_offsets(client: Any, database: str, topic: str) -> dict[int, set[int]]:
    stored: dict[int, set[int]] = {p: set() for p in range(PARTITIONS)}
    for table in ("chat_turns", "feedback", "quarantine", "stream_errors"):
        for partition, offset in client.query(
                f"SELECT source_partition, source_offset FROM {database}.{table} FINAL "
                "WHERE source_topic = {t:String}", parameters={"t": topic}).result_rows:
            stored[int(partition)].add(int(offset))
    return stored


def _high_watermarks(settings: FlywheelSettings, topic: str) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    reader = Consumer({**settings.kafka.client_config(), "group.id": uuid.uuid4().hex})
    try:
        return {p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(PARTITIONS)}
    finally:
        reader.close()


def test_a_failed_flush_commits_nothing_past_its_unstored_rows_and_a_restart_lands_them(
    scoped: tuple[FlywheelSettings, Any], tmp_path: Path,
) -> None:
    settings, client = scoped
    db = settings.clickhouse.database
    base = f"t_ff_{uuid.uuid4().hex[:8]}"
    topics = create_topics(settings, base, partitions=PARTITIONS)
    first = produce_conversations(settings, topics, conversations=60, seed=31)
    log = tmp_path / "worker.log"
    worker = start_worker(settings, topics, group=base, log=log)
    try:
        wait_for(client, settings, topics, total=first.total, workers=[worker])
        client.command(f"RENAME TABLE {db}.chat_turns TO {db}.chat_turns_away")
        second = produce_conversations(settings, topics, conversations=60, seed=32)
        deadline = time.monotonic() + 120
        while worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        code = stop_worker(worker)
    assert code != 0, "the worker should give up on a table that is gone"
    assert "SinkError" in log.read_text()
    client.command(f"RENAME TABLE {db}.chat_turns_away TO {db}.chat_turns")
    for topic in (topics.chat, topics.feedback):
        stored = _stored_offsets(client, db, topic)
        high = _high_watermarks(settings, topic)
        committed = committed_offsets(settings, base, topic, partitions=PARTITIONS)
        for partition in range(PARTITIONS):
            missing = set(range(high[partition])) - stored[partition]
            if missing:
                assert committed[partition] <= min(missing), (
                    f"{topic}[{partition}] committed {committed[partition]}, past the "
                    f"unstored offset {min(missing)}")
    assert any(set(range(h)) - _stored_offsets(client, db, topics.chat)[p]
               for p, h in _high_watermarks(settings, topics.chat).items())
    produced = Produced(chat_ids=first.chat_ids + second.chat_ids,
                        feedback_ids=first.feedback_ids + second.feedback_ids)
    restarted = start_worker(settings, topics, group=base, log=log)
    try:
        outcome = wait_for(client, settings, topics, total=produced.total,
                           workers=[restarted])
    finally:
        assert stop_worker(restarted) == 0
    assert landed_total(outcome) == produced.total
    assert_conserved(produced, outcome)
