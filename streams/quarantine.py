"""Sending records that were rejected to the quarantine topic, with their reasons."""

from __future__ import annotations

import hashlib
from typing import ClassVar

from schemas.platform import QUARANTINE_KEPT_BYTES, QuarantinedRecord, ReasonCode
from streams.producer import EventProducer
from streams.topics import QUARANTINE


class QuarantineProducer(EventProducer[QuarantinedRecord]):
    """Writes `QuarantinedRecord`s (original bytes included) to the quarantine topic.

    The topic has short retention: it exists so a record can be replayed after a fix.
    Only a redacted copy ever reaches ClickHouse.
    """

    topic: ClassVar[str] = QUARANTINE.name
    event_type = QuarantinedRecord

    def key_of(self, event: QuarantinedRecord) -> bytes:
        return event.topic.encode()

    def send_rejected(
        self,
        original: bytes,
        *,
        source: str,
        reasons: list[ReasonCode],
        detail: str = "",
        partition: int | None = None,
        offset: int | None = None,
        scores: dict[str, float] | None = None,
        size_bytes: int | None = None,
    ) -> QuarantinedRecord:
        """Quarantine one original record; returns what was sent (delivery is async).

        An original over `QUARANTINE_KEPT_BYTES` keeps its first bytes, flagged as cut, with
        its size and SHA-256, so the message always fits Kafka's message size limit.
        `size_bytes` is the size of an original that was not read whole (an HTTP body
        refused for its size); the hash then covers only what was read.

        Raises:
            EnqueueTimeoutError: the producer's queue stayed full.
        """
        record = QuarantinedRecord(
            original=original[:QUARANTINE_KEPT_BYTES],
            original_truncated=len(original) > QUARANTINE_KEPT_BYTES or size_bytes is not None,
            original_size_bytes=len(original) if size_bytes is None else size_bytes,
            original_sha256=hashlib.sha256(original).hexdigest(),
            topic=source,
            partition=partition,
            offset=offset,
            reasons=reasons,
            scores=scores or {},
            detail=detail[:4000],
        )
        self.send(record)
        return record
