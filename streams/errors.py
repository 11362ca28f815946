"""Errors raised by Flywheel's stream code: topics, producers and processors."""

from __future__ import annotations

from collections.abc import Sequence

from schemas.errors import FlywheelError


class StreamsError(FlywheelError):
    """Base class of the errors of the `streams` package."""


class KafkaUnavailableError(StreamsError):
    """The Kafka cluster could not be reached or did not answer in time."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        #: librdkafka's error code (`confluent_kafka.KafkaError`), when Kafka gave one.
        self.code = code


class TopicError(StreamsError):
    """A topic could not be created, or an existing one does not match the registry."""

    def __init__(self, message: str, *, topic: str, code: int | None = None) -> None:
        super().__init__(message)
        self.topic = topic
        #: librdkafka's error code (`confluent_kafka.KafkaError`), when Kafka gave one.
        self.code = code


class DeliveryError(StreamsError):
    """Kafka did not take one or more events; `reports` holds each failed delivery."""

    def __init__(self, message: str, *, reports: Sequence[object]) -> None:
        super().__init__(message)
        self.reports = reports


class EnqueueTimeoutError(StreamsError):
    """The producer's local queue stayed full too long; the event was not queued."""


class ProducerClosedError(StreamsError):
    """The producer was closed; create a new one to send more events."""


class SinkError(StreamsError):
    """ClickHouse refused or did not take a batch after every retry; offsets stay uncommitted."""


class WorkerError(StreamsError):
    """The stream worker cannot run (bad topics, no broker); the message says what to fix."""
