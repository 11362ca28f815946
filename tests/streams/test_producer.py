"""The producer SDK against the real broker of the test stack."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any
from uuid import uuid4

import pytest

from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings, ProducerSettings
from schemas import ChatEvent, FeedbackEvent, Role, decode
from streams.errors import DeliveryError, ProducerClosedError
from streams.producer import ChatEventProducer, DeliveryReport, FeedbackProducer

pytestmark = pytest.mark.integration


def chat_events(n: int, *, conversations: int = 5) -> list[ChatEvent]:
    return [
        ChatEvent(conversation_id=f"conv-{i % conversations}", turn_index=i // conversations,
                  role=Role.USER, text=f"question number {i} ✓", tenant="acme")
        for i in range(n)
    ]


def with_producer(settings: FlywheelSettings, **changes: Any) -> FlywheelSettings:
    producer = settings.kafka.producer.model_copy(update=changes)
    return settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"producer": producer})}
    )


def test_events_round_trip_through_kafka_as_identical_models(
    settings: FlywheelSettings, kafka_topic: str, consume: Callable[..., list[Any]]
) -> None:
    sent = chat_events(50)
    with ChatEventProducer(settings.kafka, producer_name="test", topic=kafka_topic) as producer:
        for event in sent:
            producer.send(event)
    messages = consume(kafka_topic, len(sent))
    received = {e.event_id: e for e in (decode(m.value()).payload for m in messages)}
    assert received == {e.event_id: e for e in sent}
    envelope = decode(messages[0].value())
    assert envelope.producer == "test" and envelope.kind == "chat_event"


def test_a_conversation_stays_on_one_partition_in_order(
    settings: FlywheelSettings, kafka_topic: str, consume: Callable[..., list[Any]]
) -> None:
    sent = chat_events(60, conversations=6)
    with ChatEventProducer(settings.kafka, producer_name="test", topic=kafka_topic) as producer:
        for event in sent:
            producer.send(event)
    partitions: dict[str, set[int]] = {}
    turns: dict[str, list[int]] = {}
    for message in consume(kafka_topic, len(sent)):
        event = decode(message.value()).payload
        assert message.key() == event.conversation_id.encode()
        partitions.setdefault(event.conversation_id, set()).add(message.partition())
        turns.setdefault(event.conversation_id, []).append(event.turn_index)
    assert all(len(p) == 1 for p in partitions.values())
    assert all(t == sorted(t) for t in turns.values())


def test_send_and_wait_reports_where_the_event_was_stored(
    settings: FlywheelSettings, kafka_topic: str
) -> None:
    with ChatEventProducer(settings.kafka, producer_name="test", topic=kafka_topic) as producer:
        first = producer.send_and_wait(chat_events(1)[0])
        second = producer.send_and_wait(chat_events(1)[0])
    assert first.ok and first.topic == kafka_topic and first.offset >= 0
    assert (second.partition, second.offset) == (first.partition, first.offset + 1)


def test_send_async_works_from_asyncio_code(settings: FlywheelSettings, kafka_topic: str) -> None:
    async def main() -> list[int]:
        async with ChatEventProducer(
            settings.kafka, producer_name="test", topic=kafka_topic
        ) as producer:
            reports = await asyncio.gather(*(producer.send_async(e) for e in chat_events(20)))
        return [r.offset for r in reports]

    offsets = asyncio.run(main())
    assert len(offsets) == 20 and all(o >= 0 for o in offsets)


def test_send_and_wait_right_after_a_burst_of_sends_gets_its_report(
    settings: FlywheelSettings, kafka_topic: str
) -> None:
    with ChatEventProducer(settings.kafka, producer_name="test", topic=kafka_topic) as producer:
        for event in chat_events(200):
            producer.send(event)
        report = producer.send_and_wait(chat_events(1)[0], timeout_s=30)
    assert report.ok and report.offset >= 0


def test_an_on_delivery_callback_may_send_the_next_event(
    settings: FlywheelSettings, kafka_topic: str, consume: Callable[..., list[Any]]
) -> None:
    chained, burst = chat_events(30), chat_events(300)
    pending = list(chained)
    with ChatEventProducer(settings.kafka, producer_name="test", topic=kafka_topic) as producer:

        def send_next(report: DeliveryReport) -> None:
            assert report.ok
            if pending:
                producer.send(pending.pop(), on_delivery=send_next)

        producer.send(pending.pop(), on_delivery=send_next)
        for event in burst:  # this thread serves the chain's reports while it sends
            producer.send(event)
        deadline = time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            time.sleep(0.01)
    received = {decode(m.value()).payload.event_id
                for m in consume(kafka_topic, len(chained) + len(burst))}
    assert received == {e.event_id for e in chained + burst}


def test_an_on_delivery_callback_that_raises_is_logged_and_sending_goes_on(
    settings: FlywheelSettings, kafka_topic: str, consume: Callable[..., list[Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(report: DeliveryReport) -> None:
        raise RuntimeError("a bug in the caller's callback")

    sent = chat_events(100)
    with ChatEventProducer(settings.kafka, producer_name="test", topic=kafka_topic) as producer:
        for event in sent:
            producer.send(event, on_delivery=broken)
    assert len(consume(kafka_topic, len(sent))) == len(sent)
    assert "on_delivery for event" in caplog.text


def test_a_full_local_queue_makes_send_wait_and_nothing_is_dropped(
    settings: FlywheelSettings, kafka_topic: str, consume: Callable[..., list[Any]]
) -> None:
    tiny_queue = with_producer(settings, queue_max_messages=5, linger_ms=20)
    sent = chat_events(300)
    with ChatEventProducer(tiny_queue.kafka, producer_name="test", topic=kafka_topic) as producer:
        for event in sent:
            producer.send(event)
    assert len(consume(kafka_topic, len(sent))) == len(sent)


def test_send_async_with_a_full_local_queue_waits_and_nothing_is_dropped(
    settings: FlywheelSettings, kafka_topic: str, consume: Callable[..., list[Any]]
) -> None:
    tiny_queue = with_producer(settings, queue_max_messages=5, linger_ms=20)
    sent = chat_events(60)

    async def main() -> list[DeliveryReport]:
        async with ChatEventProducer(
            tiny_queue.kafka, producer_name="test", topic=kafka_topic
        ) as producer:
            return await asyncio.gather(*(producer.send_async(e) for e in sent))

    reports = asyncio.run(main())
    assert all(r.ok for r in reports)
    assert {r.event_id for r in reports} == {e.event_id for e in sent}
    assert len(consume(kafka_topic, len(sent))) == len(sent)


def test_an_unreachable_broker_raises_instead_of_dropping(settings: FlywheelSettings) -> None:
    nowhere = settings.kafka.model_copy(
        update={"bootstrap_servers": "127.0.0.1:1",
                "producer": ProducerSettings(delivery_timeout_ms=1500)}
    )
    producer = ChatEventProducer(nowhere, producer_name="test")
    with pytest.raises(DeliveryError, match="not delivered"):
        producer.send_and_wait(chat_events(1)[0])
    producer.send(chat_events(1)[0])
    with pytest.raises(DeliveryError) as info:
        producer.close()
    assert len(info.value.reports) == 1 and info.value.reports[0].error is not None
    with pytest.raises(ProducerClosedError):
        producer.send(chat_events(1)[0])


def test_events_queued_while_the_broker_restarts_are_delivered_once_it_is_back(
    settings: FlywheelSettings, kafka_topic: str, running: Callable[..., Supervisor],
    consume: Callable[..., list[Any]],
) -> None:
    patient = with_producer(settings, delivery_timeout_ms=120_000)
    before, during = chat_events(10), chat_events(10)
    stack = running("kafka")
    with ChatEventProducer(patient.kafka, producer_name="test", topic=kafka_topic) as producer:
        for event in before:
            producer.send_and_wait(event)
        stack.down(["kafka"])
        try:
            for event in during:
                producer.send(event)
        finally:
            stack.up(["kafka"])
    messages = consume(kafka_topic, 20, timeout_s=60)
    received = {e.event_id: e for e in (decode(m.value()).payload for m in messages)}
    assert received == {e.event_id: e for e in before + during}


def test_a_producer_refuses_events_of_another_kind(settings: FlywheelSettings) -> None:
    feedback = FeedbackEvent(conversation_id="c", turn_event_id=uuid4(), kind="thumbs_up",
                             tenant="acme")  # type: ignore[arg-type]
    producer = ChatEventProducer(settings.kafka, producer_name="t")
    with pytest.raises(TypeError, match="sends ChatEvent"):
        producer.send(feedback)  # type: ignore[arg-type]
    assert FeedbackProducer.topic != ChatEventProducer.topic
