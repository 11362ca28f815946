"""Errors raised by Flywheel's stream code: topics, producers and processors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from schemas.errors import FieldProblem, FlywheelError

if TYPE_CHECKING:
    from schemas.platform import ReasonCode


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


class IngressRefusedError(StreamsError):
    """An HTTP ingress (ingest API or gateway) refused a request; carries the answer to give.

    `reason` is the quarantine reason of a refused event body, None when it is not kept;
    `partial` is what was read of a body refused before its end.
    """

    def __init__(
        self, status: int, problems: Sequence[FieldProblem], *, reason: ReasonCode | None,
        partial: bytes = b"",
    ) -> None:
        self.status = status
        self.problems = list(problems)
        self.reason = reason
        self.partial = partial
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in self.problems[:10]))

    @classmethod
    def one(
        cls, status: int, field: str, message: str, code: str, *, reason: ReasonCode | None
    ) -> IngressRefusedError:
        """A refusal for one problem."""
        return cls(status, [FieldProblem(field, message, code)], reason=reason)
