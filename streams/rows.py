"""The ClickHouse rows the pipeline lands, one builder per table, in column order."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from schemas.chat import ChatEvent
from schemas.feedback import FeedbackEvent
from schemas.platform import ReasonCode

RECORD_NAMESPACE = uuid.UUID("0b6f3c4e-51a8-4b7e-8d0e-3f5f2c9a7e21")

CHAT_TURN_COLUMNS = (
    "event_id", "conversation_id", "turn_index", "role", "text", "model", "model_version",
    "latency_ms", "prompt_tokens", "completion_tokens", "ts", "tenant", "user_id_hash",
    "locale", "language", "topic", "toxicity", "redactions", "metadata", "source_topic",
    "source_partition", "source_offset",
)
FEEDBACK_COLUMNS = (
    "event_id", "conversation_id", "turn_event_id", "kind", "rating", "correction",
    "flag_reasons", "comment", "negative", "model_version", "tenant", "user_id_hash", "ts",
    "source_topic", "source_partition", "source_offset",
)
QUARANTINE_COLUMNS = (
    "record_id", "event_id", "tenant", "source_topic", "source_partition", "source_offset",
    "reasons", "primary_reason", "scores", "detail", "redacted_excerpt", "quarantined_at",
)
ERROR_COLUMNS = (
    "source_topic", "source_partition", "source_offset", "event_id", "stage", "error_type",
    "message", "failed_at",
)
LEDGER_COLUMNS = (
    "source_topic", "source_partition", "source_offset", "event_id", "outcome", "reason",
)
#: The reason of a record whose row its table refused (see `streams.sink`): not about
#: the record's content (it was valid), but its row could not be stored.
UNSTORABLE = ReasonCode.UNSTORABLE.value


def storable(text: str) -> str:
    """`text` as valid UTF-8: a lone surrogate (which JSON can carry) becomes `\\udXXX`.

    clickhouse-connect encodes strings as strict UTF-8, so one such character made a whole
    batch unstorable; the escaped form keeps what the sender wrote, readable.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


@dataclass(frozen=True)
class Record:
    """One Kafka record as the pipeline sees it (independent of the client library)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes

    @classmethod
    def of(cls, message: Any) -> Record:
        """The Record of a message confluent-kafka consumed without error."""
        return cls(message.topic(), message.partition(), message.offset(), message.key(),
                   message.value() or b"")

    @property
    def record_id(self) -> UUID:
        """Stable id of this record's quarantine or error decision (from its position)."""
        return uuid.uuid5(RECORD_NAMESPACE, f"{self.topic}:{self.partition}:{self.offset}")


def chat_turn_row(
    event: ChatEvent, record: Record, *, text: str, language: str, topic: str,
    toxicity: float, redactions: dict[str, int],
) -> tuple[Any, ...]:
    metadata = {k: "" if v is None else str(v) for k, v in event.metadata.items()}
    return (
        event.event_id, event.conversation_id, event.turn_index, event.role.value, text,
        event.model or "", event.model_version or "", event.latency_ms, event.prompt_tokens,
        event.completion_tokens, event.timestamp, event.tenant, event.user_id_hash or "",
        event.locale or "", language, topic, toxicity, redactions, metadata, record.topic,
        record.partition, record.offset,
    )


def feedback_row(
    event: FeedbackEvent, record: Record, *, correction: str | None, comment: str | None,
    model_version: str = "",
) -> tuple[Any, ...]:
    return (
        event.event_id, event.conversation_id, event.turn_event_id, event.kind.value,
        event.rating, correction, [r.value for r in event.flag_reasons], comment,
        event.is_negative, model_version, event.tenant, event.user_id_hash or "",
        event.timestamp, record.topic, record.partition, record.offset,
    )


def quarantine_row(
    record: Record, *, reasons: list[ReasonCode], scores: dict[str, float], detail: str,
    redacted_excerpt: str, event_id: UUID | None, tenant: str | None, at: datetime,
) -> tuple[Any, ...]:
    # Quarantined input is hostile by definition: every text it gave is made storable.
    return (
        record.record_id, event_id, storable(tenant or ""), record.topic, record.partition,
        record.offset, [r.value for r in reasons], reasons[0].value,
        {storable(k): v for k, v in scores.items()}, storable(detail[:4000]),
        storable(redacted_excerpt), at,
    )


def error_row(
    record: Record, *, event_id: UUID | None, stage: str, error_type: str, message: str
) -> tuple[Any, ...]:
    return (
        record.topic, record.partition, record.offset, event_id, stage, error_type,
        storable(message[:2000]), datetime.now(UTC),
    )
