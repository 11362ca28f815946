"""Fixtures for tests that talk to the real Kafka of the test stack."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer

from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings
from streams.topics import TopicSpec, ensure_topics


@pytest.fixture
def kafka_topic(
    running: Callable[..., Supervisor], settings: FlywheelSettings, unique_name: str
) -> str:
    """A fresh topic with 3 partitions on the test broker."""
    running("kafka")
    spec = TopicSpec(name=unique_name, key="conversation id", partitions=3,
                     retention_ms=3_600_000, description="test topic")
    ensure_topics(settings, [spec])
    return unique_name


@pytest.fixture
def consume(settings: FlywheelSettings) -> Iterator[Callable[[str, int], list[Any]]]:
    """consume(topic, n): read n messages from the start of a topic (30 s at most)."""
    consumers: list[Consumer] = []

    def _consume(topic: str, count: int, timeout_s: float = 30.0) -> list[Any]:
        import time

        consumer = Consumer({**settings.kafka.client_config(), "group.id": f"g-{topic}",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})
        consumers.append(consumer)
        consumer.subscribe([topic])
        messages: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(messages) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                messages.append(message)
        return messages

    yield _consume
    for consumer in consumers:
        consumer.close()
