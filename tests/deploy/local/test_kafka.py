"""The local Kafka broker: real jars, a real JVM, real clients (confluent-kafka and aiokafka)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, Message, Producer

from deploy.errors import MissingToolError, PortInUseError
from deploy.local.kafka import KafkaService, random_cluster_id
from deploy.local.kafka_jars import jars_are_resolved
from deploy.local.stack import build_stack
from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings
from streams.topics import TopicSpec, ensure_topics
from tests.conftest import make_test_settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _topic(name: str, *, partitions: int = 3) -> TopicSpec:
    return TopicSpec(name=name, key="conversation id", partitions=partitions,
                     retention_ms=3_600_000, description="test topic")


def _produce(settings: FlywheelSettings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({**settings.kafka.client_config(), "acks": "all"})
    for key, value in records:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0, "records still queued after 30 s"


def _consume(settings: FlywheelSettings, topic: str, count: int, *, group: str,
             timeout_s: float = 30.0) -> list[Message]:
    consumer = Consumer({**settings.kafka.client_config(), "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        consumer.subscribe([topic])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while len(messages) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                messages.append(message)
        return messages
    finally:
        consumer.close()


@pytest.fixture
def kafka(running: Callable[..., Supervisor], settings: FlywheelSettings) -> FlywheelSettings:
    running("kafka")
    return settings


# -- configuration (no broker) --------------------------------------------------------


def test_server_properties_describe_a_single_node_kraft_broker_without_auto_create(
    tmp_path: Path,
) -> None:
    service = KafkaService(make_test_settings(tmp_path))
    properties = dict(
        line.split("=", 1) for line in service.server_properties().splitlines()
        if line and not line.startswith("#")
    )
    assert properties["process.roles"] == "broker,controller"
    assert properties["node.id"] == "1"
    assert properties["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29095"
    assert properties["auto.create.topics.enable"] == "false"
    assert properties["group.initial.rebalance.delay.ms"] == "0"
    assert properties["offsets.topic.replication.factor"] == "1"
    assert properties["log.dirs"].startswith(str(tmp_path.resolve()))


def test_kafka_is_external_when_bootstrap_servers_are_set(tmp_path: Path) -> None:
    defaults = make_test_settings(tmp_path)
    settings = make_test_settings(
        tmp_path, kafka=defaults.kafka.model_copy(update={"bootstrap_servers": "k1:9092"})
    )
    service = KafkaService(settings)
    assert service.external
    assert service.address == "k1:9092"


def test_ports_name_the_settings_that_choose_them(tmp_path: Path) -> None:
    specs = KafkaService(make_test_settings(tmp_path)).ports()
    assert [(s.port, s.setting) for s in specs] == [
        (29092, "FLYWHEEL_KAFKA__PORT"), (29095, "FLYWHEEL_KAFKA__CONTROLLER_PORT"),
    ]


def test_random_cluster_ids_look_like_kafka_uuids() -> None:
    ids = {random_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


def test_prepare_names_the_packages_to_install_when_java_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(MissingToolError, match="apt-get install openjdk-17-jre-headless maven"):
        KafkaService(make_test_settings(tmp_path)).prepare()


def test_port_in_use_error_names_the_port_and_the_setting(tmp_path: Path) -> None:
    port = _free_port()
    defaults = make_test_settings(tmp_path)
    settings = make_test_settings(
        tmp_path,
        kafka=defaults.kafka.model_copy(update={"port": port, "controller_port": _free_port()}),
    )
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        with pytest.raises(PortInUseError) as info:
            build_stack(settings).up(["kafka"])
    assert str(port) in str(info.value)
    assert "FLYWHEEL_KAFKA__PORT" in str(info.value)
    assert not (tmp_path / "kafka" / "data").exists(), "nothing is prepared when a port is taken"


# -- the real broker ------------------------------------------------------------------


@pytest.mark.integration
def test_a_warm_jar_cache_is_marked_so_maven_is_skipped(kafka: FlywheelSettings) -> None:
    assert jars_are_resolved(kafka.kafka_jars_dir(), version=kafka.kafka.version)


@pytest.mark.integration
def test_records_produced_with_confluent_kafka_are_consumed_from_a_registry_created_topic(
    kafka: FlywheelSettings, unique_name: str
) -> None:
    ensure_topics(kafka, [_topic(unique_name)])
    records = [(f"conv-{i % 4}".encode(), f"turn {i}".encode()) for i in range(20)]

    _produce(kafka, unique_name, records)
    messages = _consume(kafka, unique_name, len(records), group=f"g-{unique_name}")

    assert sorted((m.key(), m.value()) for m in messages) == sorted(records)
    by_partition: dict[bytes, set[int]] = {}
    for message in messages:
        by_partition.setdefault(message.key(), set()).add(message.partition())
    assert all(len(parts) == 1 for parts in by_partition.values()), "one key, one partition"


@pytest.mark.integration
def test_records_and_topics_survive_a_broker_restart(
    kafka: FlywheelSettings, stack: Supervisor, unique_name: str
) -> None:
    ensure_topics(kafka, [_topic(unique_name, partitions=2)])
    records = [(b"conv-1", f"before restart {i}".encode()) for i in range(5)]
    _produce(kafka, unique_name, records)
    pid_before = stack.pid_of(stack.get("kafka"))

    stack.down(["kafka"])
    assert stack.pid_of(stack.get("kafka")) is None
    stack.up(["kafka"])  # left running for the tests that follow

    assert stack.pid_of(stack.get("kafka")) not in (None, pid_before)
    states = ensure_topics(kafka, [_topic(unique_name, partitions=2)])
    assert [s.created for s in states] == [False]
    messages = _consume(kafka, unique_name, len(records), group=f"g-{unique_name}")
    assert [(m.key(), m.value()) for m in messages] == records


@pytest.mark.integration
def test_aiokafka_the_faust_client_produces_and_consumes_in_a_consumer_group(
    kafka: FlywheelSettings, unique_name: str
) -> None:
    ensure_topics(kafka, [_topic(unique_name)])
    values = [f"event {i}".encode() for i in range(10)]

    async def round_trip() -> list[bytes]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.kafka.bootstrap)
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait(unique_name, value, key=b"conv-1")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            unique_name, bootstrap_servers=kafka.kafka.bootstrap,
            group_id=f"g-{unique_name}", auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        received: list[bytes] = []
        try:
            deadline = time.monotonic() + 30
            while len(received) < len(values) and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                received.extend(m.value for batch in batches.values() for m in batch)
            await consumer.commit()
        finally:
            await consumer.stop()
        return received

    assert asyncio.run(round_trip()) == values

