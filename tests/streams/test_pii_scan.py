"""The warehouse scan for raw private data, over data landed through the real stream worker.

A worker lands the adversarial private-data forms (in texts, metadata, identifiers,
feedback comments, refused records and an ingest rejection) into a database of its own;
the scan of every text column of every table must then find no raw private data. A
second test stores raw rows directly, to show the scan finds what it should.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings
from schemas.chat import ChatEvent, Role
from schemas.envelope import encode
from schemas.feedback import FeedbackEvent, FeedbackKind
from schemas.platform import QuarantinedRecord, ReasonCode
from streams.pii_scan import private_kinds, scan_warehouse
from streams.rows import (
    CHAT_TURN_COLUMNS,
    FEEDBACK_COLUMNS,
    Record,
    chat_turn_row,
    feedback_row,
)
from tests.conftest import migrated_database, with_database
from tests.streams.worker_harness import (
    create_topics,
    fast_worker_settings,
    start_worker,
    stop_worker,
    wait_for,
)

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def own_database(running: Callable[..., Supervisor], settings: FlywheelSettings
                 ) -> Iterator[tuple[FlywheelSettings, Any]]:
    running("kafka", "clickhouse")
    mine = with_database(settings, f"pii_scan_{uuid.uuid4().hex[:8]}")
    with migrated_database(mine) as client:
        yield fast_worker_settings(mine), client


def _adversarial_texts(count: int) -> list[str]:
    rows = [json.loads(line) for line in (FIXTURES / "pii_adversarial.jsonl").read_text()
            .splitlines()]
    return [str(r["text"]) for r in rows if not str(r["form"]).endswith("+json")][:count]


def test_no_raw_private_data_is_stored_after_the_stream_lands_every_leaked_form(
    own_database: tuple[FlywheelSettings, Any], tmp_path: Path,
) -> None:
    settings, client = own_database
    base = f"t_scan_{uuid.uuid4().hex[:8]}"
    topics = create_topics(settings, base)
    producer = Producer(settings.kafka.client_config())
    sent = 0
    for i, text in enumerate(_adversarial_texts(60)):
        conversation = f"user{i}@example.com" if i % 2 else f"conv-{i}"
        tenant = "owner@example.com" if i % 3 == 0 else "acme"
        user = ChatEvent(conversation_id=conversation, turn_index=0, role=Role.USER, text=text,
                         tenant=tenant, metadata={"contact": f"bob{i}\u00ad@example.org",
                                                  "card": 4111111111111111, "plan": "pro"})
        answer = ChatEvent(conversation_id=conversation, turn_index=1, role=Role.ASSISTANT,
                           text=f"Noted, we will call 415 555{i:04d} about request {i}.",
                           model="flywheel-chat", model_version="v1", tenant=tenant,
                           metadata={"phone": "4155552671"})
        feedback = FeedbackEvent(conversation_id=conversation, turn_event_id=answer.event_id,
                                 kind=FeedbackKind.THUMBS_DOWN, tenant=tenant,
                                 comment=f"call me at 415555{i:04d} or 123 45 6789")
        for topic, event in ((topics.chat, user), (topics.chat, answer),
                             (topics.feedback, feedback)):
            producer.produce(topic, encode(event, producer="t"), key=conversation.encode())
            sent += 1
    card_text = "card 4111.1111.1111.1111, mail eve\u200e@example.com"
    refused = [
        b"card 4111/1111/1111/1111 {not json",
        json.dumps({"kind": "chat_event", "schema_version": 1, "producer": "t",
                    "payload": {"event_id": str(uuid.uuid4()), "tenant": "eve@example.com",
                                "text": card_text}}).encode(),
        encode(ChatEvent(conversation_id="c", turn_index=0, role=Role.USER, tenant="acme",
                         text=card_text + " " + "x" * 9000), producer="t"),
    ]
    for value in refused:
        producer.produce(topics.chat, value, key=b"hostile")
        sent += 1
    body = json.dumps({"conversation_id": "c", "tenant": "eve@example.com",
                       "text": f"my iban is DE89 3704 0044 0532 0130 00, {card_text}"})
    producer.produce(topics.quarantine, encode(QuarantinedRecord(
        original=body.encode(), topic="ingest:/v1/events/chat",
        reasons=[ReasonCode.SCHEMA_VIOLATION], tenant="eve@example.com",
        detail="turn_index: field required (given eve@example.com)"), producer="t"))
    assert producer.flush(30) == 0
    worker = start_worker(settings, topics, group=base, log=tmp_path / "worker.log")
    db = settings.clickhouse.database
    try:
        outcome = wait_for(client, settings, topics, total=sent, workers=[worker])
        deadline = time.monotonic() + 60
        while client.query(f"SELECT count() FROM {db}.quarantine WHERE source_topic = "
                           "{t:String}", parameters={"t": topics.quarantine}
                           ).result_rows[0][0] < 1 and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        assert stop_worker(worker) == 0
    assert len(outcome["curated"]) >= 100 and len(outcome["quarantine"]) >= 3
    # Every curated user turn carried a card and an email in its metadata (some turns are
    # quarantined as near duplicates: the templates differ only in their numbers).
    users, unredacted = client.query(
        f"SELECT count(), countIf(redactions['card'] = 0 OR redactions['email'] = 0) "
        f"FROM {db}.chat_turns WHERE role = 'user'").result_rows[0]
    assert users >= 30 and unredacted == 0

    report = scan_warehouse(client, database=db)

    assert report.tables >= 8 and report.rows_read >= 200
    assert report.leaks == [] and report.raw_rows == 0


def test_the_scan_reports_each_table_column_and_row_holding_raw_private_data(
    own_database: tuple[FlywheelSettings, Any],
) -> None:
    settings, client = own_database
    db = settings.clickhouse.database
    turn = ChatEvent(conversation_id="alice@example.com", turn_index=0, role=Role.USER,
                     text="card ٤١١١ ١١١١ ١١١١ ١١١١", tenant="acme",
                     metadata={"phone": "415 5552671"})
    clean = ChatEvent(conversation_id="c2", turn_index=0, role=Role.USER,
                      text="born in 1985, order #1185621, v1.2.3", tenant="acme")
    record = Record("chat", 0, 0, None, b"")
    rows = [chat_turn_row(e, record, text=e.text, language="en", topic="", toxicity=0.0,
                          redactions={}) for e in (turn, clean)]
    client.insert(f"{db}.chat_turns", rows, column_names=CHAT_TURN_COLUMNS)
    feedback = FeedbackEvent(conversation_id="c2", turn_event_id=clean.event_id,
                             kind=FeedbackKind.THUMBS_DOWN, tenant="acme",
                             comment="my ssn is 123456789")
    client.insert(f"{db}.feedback", [feedback_row(feedback, record, correction=None,
                                                  comment=feedback.comment)],
                  column_names=FEEDBACK_COLUMNS)

    report = scan_warehouse(client, database=db)

    found = {(leak.table, leak.column): (leak.kinds, leak.rows) for leak in report.leaks}
    assert found == {("chat_turns", "conversation_id"): (("email",), 1),
                     ("chat_turns", "text"): (("card",), 1),
                     ("chat_turns", "metadata"): (("phone",), 1),
                     ("feedback", "comment"): (("ssn",), 1)}
    assert report.rows_by_table == {"chat_turns": 1, "feedback": 1}
    assert report.raw_rows == 2


def test_placeholders_and_pseudonyms_are_not_private_data() -> None:
    assert private_kinds("card [CARD], mail [EMAIL], id email-3f9a1c2b7d4e5f60") == set()
    assert private_kinds("call 4155552671") == {"phone"}
