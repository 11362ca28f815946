"""Landing the HTTP ingest's rejections in the ClickHouse quarantine table.

The ingest (`streams.ingest`) answers 400/422 and sends the rejected body to the
quarantine topic as a `QuarantinedRecord` with `partition=None` and `topic` naming the
route (`ingest:/v1/events/chat`): it never reached a Kafka topic the worker reads. The
worker's own rejections also go to that topic, but they land through the pipeline. This
reader, a second consumer inside the worker process with its own group, lands only the
ingest's: a redacted row whose pointer is the quarantine topic's own partition and offset,
where the original bytes are. Rows are keyed by that pointer, so a replay rewrites the
same row; the worker commits this consumer's offsets after the insert, with its own. A
row's `record_id` is the QuarantinedRecord's, which the ingest gave the client as
`quarantine_id`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from confluent_kafka import Consumer, KafkaError, TopicPartition
from pydantic_core import from_json

from schemas.base import ID_PATTERN, MAX_ID_CHARS
from schemas.envelope import decode
from schemas.errors import FieldProblem, SchemaValidationError, UnknownSchemaError
from schemas.platform import QuarantinedRecord
from streams.pii import redact
from streams.pii_fields import redact_identifier
from streams.rows import Record, quarantine_row

if TYPE_CHECKING:
    from deploy.settings import FlywheelSettings
    from streams.metrics import StreamMetrics

logger = logging.getLogger(__name__)

EXCERPT_CHARS = 500
#: Suffix of the consumer group, after the worker's own group id.
GROUP_SUFFIX = ".ingest-quarantine"
_IDENTIFIER = re.compile(ID_PATTERN)


def ingest_rejection_row(record: Record, *, pseudonym_key: bytes) -> tuple[Any, ...] | None:
    """The quarantine row of an ingest rejection; None for a worker's own rejection.

    Its texts are redacted and its tenant pseudonymised (`streams.pii_fields`) with
    `pseudonym_key`, the same key the pipeline uses.

    Raises:
        SchemaValidationError, UnknownSchemaError: the message is not a QuarantinedRecord.
    """
    try:
        payload = json.loads(record.value).get("payload")
    except (ValueError, AttributeError) as e:
        raise SchemaValidationError("quarantined_record", [
            FieldProblem("(body)", "not a JSON envelope", "not_json")]) from e
    if isinstance(payload, dict) and payload.get("partition") is not None:
        return None  # read from a topic by the worker, which landed it already
    quarantined = decode(record.value, expect=QuarantinedRecord).payload
    assert isinstance(quarantined, QuarantinedRecord)
    if quarantined.partition is not None:
        return None
    event_id, tenant = quarantined.event_id, quarantined.tenant
    if event_id is None:
        event_id, tenant = _ids_of_bare_event(quarantined.original)
    size = ""
    if quarantined.original_truncated and quarantined.original_size_bytes is not None:
        size = (f" (original of {quarantined.original_size_bytes:,} bytes cut to "
                f"{len(quarantined.original):,}, sha256 {quarantined.original_sha256})")
    detail = redact(f"rejected at {quarantined.topic}{size}: {quarantined.detail}").text
    if tenant is not None:
        tenant = redact_identifier(tenant, key=pseudonym_key)
    # Redacted past the excerpt's end, then cut: a datum the cut would halve is found whole.
    chars = EXCERPT_CHARS + 200
    text = quarantined.original[:chars * 2].decode("utf-8", "replace")[:chars]
    row = quarantine_row(
        record, reasons=list(quarantined.reasons), scores=dict(quarantined.scores),
        detail=detail, redacted_excerpt=redact(text).text[:EXCERPT_CHARS], event_id=event_id,
        tenant=tenant, at=quarantined.quarantined_at)
    # The decision's own id (first column), not the one derived from the topic position.
    return (quarantined.record_id, *row[1:])


def _ids_of_bare_event(original: bytes) -> tuple[UUID | None, str | None]:
    try:
        # pydantic-core, not json: a refused body may be nested thousands of levels deep
        # (RecursionError in json) or hold a 5,000-digit integer; this raises ValueError.
        body = from_json(original)
        event_id, tenant = body.get("event_id"), body.get("tenant")
        # Only a valid identifier is copied: a raw one (a lone surrogate, a control
        # character) cannot be encoded into the row and would stop the worker.
        valid = (isinstance(tenant, str) and len(tenant) <= MAX_ID_CHARS
                 and _IDENTIFIER.fullmatch(tenant) is not None)
        return (UUID(event_id) if isinstance(event_id, str) else None,
                tenant if valid else None)
    except (ValueError, AttributeError, TypeError):
        return None, None


class IngestQuarantineReader:
    """The worker's second consumer: ingest rejections in, quarantine rows out."""

    def __init__(
        self, settings: FlywheelSettings, *, topic: str, group_id: str,
        on_revoke: Callable[[], None], metrics: StreamMetrics,
    ) -> None:
        self._settings = settings
        self._topic = topic
        self._group_id = group_id + GROUP_SUFFIX
        self._on_revoke = on_revoke
        self._metrics = metrics
        self._consumer: Consumer | None = None
        self._offsets: dict[int, int] = {}
        self._pseudonym_key = settings.streams.pseudonym_key.get_secret_value().encode()

    @property
    def has_uncommitted(self) -> bool:
        return bool(self._offsets)

    def open(self) -> None:
        """Create the consumer and subscribe (no network call until the first poll)."""
        self._consumer = Consumer({
            **self._settings.kafka.client_config(),
            "group.id": self._group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": self._settings.streams.session_timeout_ms,
        }, logger=logger)
        self._consumer.subscribe([self._topic], on_revoke=lambda *_: self._on_revoke())

    def poll(self, *, max_records: int) -> list[tuple[Any, ...]]:
        """Quarantine rows of the ingest rejections available now (does not wait)."""
        assert self._consumer is not None
        rows = []
        for message in self._consumer.consume(num_messages=max_records, timeout=0):
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    logger.warning("quarantine consumer error: %s", error.str())
                continue
            record = Record.of(message)
            self._offsets[record.partition] = record.offset + 1
            try:
                row = ingest_rejection_row(record, pseudonym_key=self._pseudonym_key)
            except (SchemaValidationError, UnknownSchemaError) as e:
                # Not ours to land: whoever wrote it bypassed QuarantineProducer.
                logger.warning("%s[%d]@%d is not a QuarantinedRecord (%s); left on the topic",
                               record.topic, record.partition, record.offset, e)
                self._metrics.records_out.labels("unreadable_quarantine").inc()
                continue
            if row is not None:
                rows.append(row)
                self._metrics.records_in.labels(record.topic).inc()
                self._metrics.rejections.labels("ingest", row[7]).inc()
        return rows

    def take_offsets(self) -> dict[int, int]:
        """The offsets read so far (next to read, per partition), handed to `commit`."""
        taken, self._offsets = self._offsets, {}
        return taken

    def commit(self, offsets: dict[int, int]) -> None:
        """Commit offsets `take_offsets` returned; call only after their rows were inserted."""
        if self._consumer is not None and offsets:
            self._consumer.commit(offsets=[TopicPartition(self._topic, p, o)
                                           for p, o in offsets.items()], asynchronous=False)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
