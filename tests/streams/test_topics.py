"""The topic registry, and ensure_topics against the real test broker."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings
from streams.errors import KafkaUnavailableError, TopicError
from streams.topics import (
    CHAT_EVENTS,
    FEEDBACK_EVENTS,
    MODELS_PUBLISHED,
    QUARANTINE,
    REGISTRY,
    TopicSpec,
    by_name,
    describe_topics,
    ensure_topics,
)
from tests.conftest import make_test_settings


def _spec(name: str, *, partitions: int = 2, **fields: object) -> TopicSpec:
    values: dict[str, object] = {
        "key": "test key", "partitions": partitions, "retention_ms": 3_600_000,
        "description": "test topic",
    }
    values.update(fields)
    return TopicSpec(name=name, **values)  # type: ignore[arg-type]


# -- the registry (no broker) ---------------------------------------------------------


def test_registry_topic_names_are_unique() -> None:
    names = [spec.name for spec in REGISTRY]
    assert len(names) == len(set(names))


def test_registry_holds_every_flywheel_topic() -> None:
    assert {spec.name for spec in REGISTRY} == {
        "flywheel.chat.events", "flywheel.feedback.events", "flywheel.quarantine",
        "flywheel.curated.turns", "flywheel.training.examples", "flywheel.errors",
        "flywheel.models.published", "flywheel.alerts",
    }


def test_chat_and_feedback_events_are_keyed_by_conversation_id_and_co_partitioned() -> None:
    assert CHAT_EVENTS.key == FEEDBACK_EVENTS.key == "conversation id"
    assert CHAT_EVENTS.partitions == FEEDBACK_EVENTS.partitions


def test_models_published_is_compacted_by_model_name_and_kept_forever() -> None:
    assert MODELS_PUBLISHED.cleanup_policy == "compact"
    assert MODELS_PUBLISHED.key == "model name"
    assert MODELS_PUBLISHED.config() == {"cleanup.policy": "compact", "retention.ms": "-1"}


def test_quarantine_keeps_records_for_less_time_than_chat_events() -> None:
    assert QUARANTINE.retention_ms is not None and CHAT_EVENTS.retention_ms is not None
    assert QUARANTINE.retention_ms < CHAT_EVENTS.retention_ms


def test_by_name_finds_a_registered_topic_and_refuses_an_unknown_one() -> None:
    assert by_name("flywheel.alerts").name == "flywheel.alerts"
    with pytest.raises(KeyError, match="not a registered topic"):
        by_name("flywheel.nope")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "has space"}, "not legal"),
        ({"name": "x" * 250}, "not legal"),
        ({"name": ".."}, "not legal"),
        ({"partitions": 0}, "partitions must be at least 1"),
        ({"retention_ms": 0}, "retention_ms must be positive"),
        ({"cleanup_policy": "shred"}, "cleanup_policy"),
    ],
)
def test_topic_spec_rejects_invalid_fields_with_a_message_that_says_why(
    fields: dict[str, object], message: str
) -> None:
    name = str(fields.pop("name", "ok.topic"))
    with pytest.raises(ValueError, match=message):
        _spec(name, **fields)


def test_ensure_topics_raises_kafka_unavailable_naming_the_fix_when_no_broker_answers(
    tmp_path: Path,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    defaults = make_test_settings(tmp_path)
    settings = make_test_settings(
        tmp_path, kafka=defaults.kafka.model_copy(update={"port": free_port})
    )
    with pytest.raises(KafkaUnavailableError) as info:
        ensure_topics(settings, [_spec("never.created")], timeout_s=2)
    assert "flywheel stack up" in str(info.value)
    assert "FLYWHEEL_KAFKA__BOOTSTRAP_SERVERS" in str(info.value)
    assert info.value.code is not None


# -- against the real broker ----------------------------------------------------------


@pytest.fixture
def kafka(running: Callable[..., Supervisor], settings: FlywheelSettings) -> FlywheelSettings:
    running("kafka")
    return settings


@pytest.mark.integration
def test_ensure_topics_creates_missing_topics_and_is_idempotent(
    kafka: FlywheelSettings, unique_name: str
) -> None:
    specs = [_spec(f"{unique_name}.a", partitions=3), _spec(f"{unique_name}.b", partitions=1)]

    first = ensure_topics(kafka, specs)
    second = ensure_topics(kafka, specs)

    assert [s.created for s in first] == [True, True]
    assert [s.created for s in second] == [False, False]
    assert [s.partitions for s in describe_topics(kafka, specs)] == [3, 1]


@pytest.mark.integration
def test_ensure_topics_creates_only_the_missing_ones(
    kafka: FlywheelSettings, unique_name: str
) -> None:
    old, new = _spec(f"{unique_name}.old"), _spec(f"{unique_name}.new")
    ensure_topics(kafka, [old])

    states = ensure_topics(kafka, [old, new])

    assert {s.spec.name: s.created for s in states} == {old.name: False, new.name: True}


@pytest.mark.integration
def test_created_topic_has_the_retention_and_cleanup_policy_of_its_spec(
    kafka: FlywheelSettings, unique_name: str
) -> None:
    spec = _spec(unique_name, retention_ms=None, cleanup_policy="compact")
    ensure_topics(kafka, [spec])

    admin = AdminClient(kafka.kafka.client_config())
    resource = ConfigResource(ConfigResource.Type.TOPIC, spec.name)
    config = admin.describe_configs([resource])[resource].result(timeout=10)

    assert config["cleanup.policy"].value == "compact"
    assert config["retention.ms"].value == "-1"


@pytest.mark.integration
def test_ensure_topics_raises_when_an_existing_topic_has_fewer_partitions_than_the_registry(
    kafka: FlywheelSettings, unique_name: str
) -> None:
    ensure_topics(kafka, [_spec(unique_name, partitions=1)])

    with pytest.raises(TopicError, match="has 1 partitions but the registry asks for 4") as info:
        ensure_topics(kafka, [_spec(unique_name, partitions=4)])
    assert info.value.topic == unique_name


@pytest.mark.integration
def test_ensure_topics_creates_the_whole_registry(kafka: FlywheelSettings) -> None:
    ensure_topics(kafka)

    states = describe_topics(kafka)

    assert all(s.exists for s in states)
    assert {s.spec.name: s.partitions for s in states} == {
        spec.name: spec.partitions for spec in REGISTRY
    }
