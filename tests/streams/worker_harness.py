"""Helpers of the stream-worker tests: topics, worker processes, events, warehouse reads."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from deploy.clickhouse.config import SETTINGS_ENV, settings_to_json
from deploy.settings import FlywheelSettings
from schemas.chat import ChatEvent, Role
from schemas.envelope import encode
from schemas.feedback import FeedbackEvent, FeedbackKind

ROOT = Path(__file__).resolve().parents[2]
BIG_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Topics:
    chat: str
    feedback: str
    quarantine: str
    errors: str

    def args(self) -> list[str]:
        return ["--chat-topic", self.chat, "--feedback-topic", self.feedback,
                "--quarantine-topic", self.quarantine, "--errors-topic", self.errors]


def fast_worker_settings(settings: FlywheelSettings, **streams: Any) -> FlywheelSettings:
    """`settings` with a stream worker tuned for tests: small batches, short timeouts."""
    options = {"cap_min_records": 1_000_000, "sink_flush_interval_s": 0.3,
               "poll_batch_max": 200, "sink_batch_rows": 500, "session_timeout_ms": 6000,
               "max_record_bytes": 1_048_576, **streams}
    return settings.model_copy(update={"streams": settings.streams.model_copy(update=options)})


def committed_offsets(settings: FlywheelSettings, group: str, topic: str, *,
                      partitions: int) -> dict[int, int]:
    """The group's committed offset per partition of `topic` (-1001: none)."""
    from confluent_kafka import Consumer, TopicPartition

    reader = Consumer({**settings.kafka.client_config(), "group.id": group})
    try:
        found = reader.committed([TopicPartition(topic, p) for p in range(partitions)],
                                 timeout=30)
        return {tp.partition: tp.offset for tp in found}
    finally:
        reader.close()


def assert_conserved(produced: Produced, outcome: dict[str, Any]) -> None:
    """Every event sent landed in exactly one table, once (by event id, under FINAL)."""
    from collections import Counter

    ids: Counter[uuid.UUID] = Counter(outcome["curated"])
    ids.update(r[0] for r in outcome["quarantine"] if r[0] is not None)
    ids.update(e for e in outcome["errors"] if e is not None)
    sent = produced.chat_ids + produced.feedback_ids
    missing = [i for i in sent if ids[i] == 0]
    twice = [i for i, n in ids.items() if n > 1]
    assert not missing, f"{len(missing)} events never landed"
    assert not twice, f"{len(twice)} events landed twice"
    assert landed_total(outcome) == produced.total


def create_topics(settings: FlywheelSettings, base: str, *, partitions: int = 3) -> Topics:
    topics = Topics(f"{base}_chat", f"{base}_fb", f"{base}_q", f"{base}_err")
    admin = AdminClient(settings.kafka.client_config())
    big = {"max.message.bytes": str(BIG_MESSAGE_BYTES)}
    futures = admin.create_topics([
        NewTopic(topics.chat, partitions, 1, config=big),
        NewTopic(topics.feedback, partitions, 1),
        NewTopic(topics.quarantine, 1, 1),
        NewTopic(topics.errors, 1, 1),
    ])
    for future in futures.values():
        future.result(30)
    return topics


def start_worker(settings: FlywheelSettings, topics: Topics, *, group: str,
                 log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, SETTINGS_ENV: settings_to_json(settings)}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.worker", *topics.args(), "--group", group,
             "--no-metrics"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop_worker(process: subprocess.Popen[bytes], *, timeout_s: float = 30.0) -> int:
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(10)


@dataclass
class Produced:
    """What a test sent: event ids and the count of raw records per topic."""

    chat_ids: list[uuid.UUID] = field(default_factory=list)
    feedback_ids: list[uuid.UUID] = field(default_factory=list)
    raw_records: int = 0
    assistant_ids: list[uuid.UUID] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.chat_ids) + len(self.feedback_ids) + self.raw_records


SENTENCES = [
    "How do I reset the password on my account",
    "The export to CSV fails when the report has more than ten thousand rows",
    "Can you explain the difference between a list and a tuple in Python",
    "My order has not arrived and the tracking page shows nothing new",
    "What is the best way to learn French grammar quickly",
    "Please summarize the meeting notes from yesterday in three bullet points",
    "The app crashes on startup after the latest update on Android",
    "Which plan includes priority support and how much does it cost",
]


def realistic_text(rng: random.Random, index: int) -> str:
    words = " ".join(rng.choice(SENTENCES) for _ in range(rng.randint(1, 4)))
    return f"{words}. Ticket {index} ({rng.randint(1990, 2026)})."


def produce_conversations(
    settings: FlywheelSettings, topics: Topics, *, conversations: int, seed: int = 7,
    extra_raw: list[tuple[str, bytes]] | None = None,
) -> Produced:
    """User/assistant pairs with 10% feedback, some toxic, PII and duplicate bait."""
    rng = random.Random(seed)
    # Idempotent, as the SDK is: a produce retried across a broker outage must not put
    # one event at two offsets (a 5-event "landed twice" seen once, with the broker frozen).
    producer = Producer({**settings.kafka.client_config(), "linger.ms": 5,
                         "message.max.bytes": BIG_MESSAGE_BYTES,
                         "enable.idempotence": True, "acks": "all"})
    produced = Produced()
    now = datetime.now(UTC)
    for c in range(conversations):
        conversation = f"conv-{seed}-{c}"
        user_text = realistic_text(rng, c)
        if c % 20 == 3:
            user_text = "You are a worthless fucking idiot and I hate you"
        elif c % 20 == 5:
            user_text = f"My email is user{c}@example.com and card 4111 1111 1111 1111"
        elif c % 20 == 7:
            user_text = "Hello there"  # exact duplicate bait: same text many times
        user = ChatEvent(conversation_id=conversation, turn_index=0, role=Role.USER,
                         text=user_text, tenant=f"tenant-{c % 3}", timestamp=now)
        answer = ChatEvent(conversation_id=conversation, turn_index=1, role=Role.ASSISTANT,
                           text=f"Here is how to proceed with request {c}: "
                                + realistic_text(rng, c + 10_000),
                           model="flywheel-chat", model_version="v1", latency_ms=12.5,
                           tenant=f"tenant-{c % 3}", timestamp=now)
        for event in (user, answer):
            producer.produce(topics.chat, encode(event, producer="test"),
                             key=conversation.encode())
            produced.chat_ids.append(event.event_id)
        produced.assistant_ids.append(answer.event_id)
        if c % 10 == 0:
            feedback = FeedbackEvent(conversation_id=conversation, turn_event_id=answer.event_id,
                                     kind=FeedbackKind.RATING, rating=rng.randint(1, 5),
                                     tenant=f"tenant-{c % 3}", timestamp=now)
            producer.produce(topics.feedback, encode(feedback, producer="test"),
                             key=conversation.encode())
            produced.feedback_ids.append(feedback.event_id)
        producer.poll(0)
    for topic, value in extra_raw or []:
        producer.produce(topic, value, key=b"hostile")
        produced.raw_records += 1
    assert producer.flush(60) == 0
    return produced


def landed(client: Any, settings: FlywheelSettings, topics: Topics) -> dict[str, Any]:
    """Per table: row count with FINAL, distinct ids, and the ids themselves."""
    db = settings.clickhouse.database
    src = (topics.chat, topics.feedback)
    turns = client.query(f"SELECT event_id FROM {db}.chat_turns FINAL "
                         "WHERE source_topic = {t:String}", parameters={"t": topics.chat})
    fb = client.query(f"SELECT event_id FROM {db}.feedback FINAL "
                      "WHERE source_topic = {t:String}", parameters={"t": topics.feedback})
    quarantine = client.query(
        f"SELECT event_id, source_topic, source_offset, primary_reason, redacted_excerpt "
        f"FROM {db}.quarantine FINAL WHERE source_topic IN {{s:Array(String)}}",
        parameters={"s": list(src)})
    errors = client.query(f"SELECT event_id FROM {db}.stream_errors FINAL "
                          "WHERE source_topic IN {s:Array(String)}", parameters={"s": list(src)})
    return {
        "curated": [r[0] for r in turns.result_rows] + [r[0] for r in fb.result_rows],
        "quarantine": quarantine.result_rows,
        "errors": [r[0] for r in errors.result_rows],
    }


def landed_total(outcome: dict[str, Any]) -> int:
    return len(outcome["curated"]) + len(outcome["quarantine"]) + len(outcome["errors"])


def wait_for(client: Any, settings: FlywheelSettings, topics: Topics, *, total: int,
             timeout_s: float = 120.0, workers: list[subprocess.Popen[bytes]] | None = None,
             ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    outcome = landed(client, settings, topics)
    while landed_total(outcome) < total and time.monotonic() < deadline:
        for worker in workers or []:
            assert worker.poll() is None, "a stream worker exited early; see its log"
        time.sleep(0.5)
        outcome = landed(client, settings, topics)
    return outcome
