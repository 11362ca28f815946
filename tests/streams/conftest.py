"""Fixtures for tests that talk to the real Kafka (and ClickHouse) of the test stack."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer

from deploy.clickhouse.client import get_client
from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings
from deploy.warehouse import migrate
from streams.topics import TopicSpec, ensure_topics
from tests.streams.worker_harness import fast_worker_settings


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


@pytest.fixture(scope="module")
def migrated(running: Callable[..., Supervisor], settings: FlywheelSettings) -> FlywheelSettings:
    """The session stack's Kafka and ClickHouse up, with Flywheel's tables migrated."""
    running("kafka", "clickhouse")
    with get_client(settings) as client:
        migrate(client, settings)
    return settings


@pytest.fixture(scope="module")
def worker_settings(migrated: FlywheelSettings) -> FlywheelSettings:
    """Settings of a stream worker tuned for tests (a module may override it)."""
    return fast_worker_settings(migrated)


@pytest.fixture(scope="module")
def client(worker_settings: FlywheelSettings) -> Iterator[Any]:
    """A ClickHouse client on the workers' database."""
    with get_client(worker_settings) as c:
        yield c


@pytest.fixture(scope="module")
def api(running: Callable[..., Supervisor], settings: FlywheelSettings
                  ) -> Iterator[Any]:
    """The ingest API in-process (Starlette's TestClient) on the test broker."""
    from fastapi.testclient import TestClient

    from streams.ingest import create_app

    running("kafka")
    ensure_topics(settings)
    with TestClient(create_app(settings)) as test_client:
        yield test_client
