"""Sending records that were rejected to the quarantine topic, with their reasons."""

from __future__ import annotations

from typing import ClassVar

from schemas.platform import MAX_QUARANTINE_BYTES, QuarantinedRecord, ReasonCode
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
    ) -> QuarantinedRecord:
        """Quarantine one original record; returns what was sent (delivery is async)."""
        record = QuarantinedRecord(
            original=original[:MAX_QUARANTINE_BYTES],
            original_truncated=len(original) > MAX_QUARANTINE_BYTES,
            topic=source,
            partition=partition,
            offset=offset,
            reasons=reasons,
            scores=scores or {},
            detail=detail[:4000],
        )
        self.send(record)
        return record
