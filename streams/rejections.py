"""The worker's side of the ingest's rejections: a reader that one bad message cannot stop.

`IngestQuarantineReader` turns the ingest's rejections into quarantine rows. When building
one row raises (a lone surrogate once reached the redactor), the exception came out of
its `poll` with the offsets of that poll's records already counted as read and their
rows lost, and it ended the worker; the restarted worker read the same message and died
again. `IngestRejections` wraps the reader so that:

- the offsets of a poll that raised are never committed: the reader is opened again,
  from its committed offsets, and reads those messages once more;
- it then reads one message per poll until it is past them, so the message that raises
  is known exactly, and lands as a quarantine row of its own (reason `unstorable`, the
  error in `detail`), pointing at its place in the quarantine topic, where its bytes are;
- everything else goes on as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaException

from streams.ingest_quarantine import IngestQuarantineReader
from streams.rows import UNSTORABLE, Record, storable

if TYPE_CHECKING:
    from deploy.settings import FlywheelSettings
    from streams.metrics import StreamMetrics

logger = logging.getLogger(__name__)


class IngestRejections:
    """`IngestQuarantineReader` with its offsets kept here and its failures contained."""

    def __init__(
        self, settings: FlywheelSettings, *, topic: str, group_id: str,
        on_revoke: Callable[[], None], metrics: StreamMetrics,
    ) -> None:
        self._topic = topic
        self._metrics = metrics
        self._make = lambda: IngestQuarantineReader(
            settings, topic=topic, group_id=group_id, on_revoke=on_revoke, metrics=metrics)
        self._reader: IngestQuarantineReader | None = None
        self._read: dict[int, int] = {}  # next offset per partition, rows buffered
        self._isolate_until: dict[int, int] = {}  # read one at a time until past these

    @property
    def has_uncommitted(self) -> bool:
        return bool(self._read)

    def open(self) -> None:
        self._reader = self._make()
        self._reader.open()

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def poll(self, *, max_records: int) -> list[tuple[Any, ...]]:
        """Quarantine rows of the rejections available now; never raises for a message.

        Raises:
            KafkaException: the reader's consumer failed (an outage): retried by the caller.
        """
        assert self._reader is not None
        isolating = bool(self._isolate_until)
        try:
            rows = self._reader.poll(max_records=1 if isolating else max_records)
        except KafkaException:
            raise
        except Exception as e:  # a message broke the row builder
            return self._contain(e, isolating)
        self._absorb(self._reader.take_offsets())
        if isolating and all(self._read.get(p, 0) >= o for p, o in self._isolate_until.items()):
            self._isolate_until = {}
            logger.info("past the messages of the failed poll; reading in batches again")
        return rows

    def take_offsets(self) -> dict[int, int]:
        """The offsets whose rows were handed out (per partition, next to read)."""
        taken, self._read = self._read, {}
        return taken

    def commit(self, offsets: dict[int, int]) -> None:
        """Commit offsets `take_offsets` returned, once their rows are inserted."""
        if self._reader is not None:
            self._reader.commit(offsets)

    def _absorb(self, offsets: dict[int, int]) -> None:
        for partition, offset in offsets.items():
            self._read[partition] = max(offset, self._read.get(partition, 0))

    def _contain(self, error: Exception, isolating: bool) -> list[tuple[Any, ...]]:
        assert self._reader is not None
        failed = self._reader.take_offsets()
        if isolating and len(failed) == 1:
            # One message per poll: this is the one. Set it aside and move past it.
            [(partition, after)] = failed.items()
            offset = after - 1
            logger.error("%s[%d]@%d cannot be landed (%s: %s); quarantined as %s",
                         self._topic, partition, offset, type(error).__name__, error,
                         UNSTORABLE)
            self._metrics.rejections.labels("ingest", UNSTORABLE).inc()
            self._absorb(failed)
            return [_unstorable_row(Record(self._topic, partition, offset, None, b""), error)]
        # Rows of that poll were lost with the exception: read its messages again, from
        # the committed offsets, one at a time.
        logger.warning("a poll of %s raised (%s: %s); reading its messages again one by one",
                       self._topic, type(error).__name__, error)
        for partition, offset in failed.items():
            self._isolate_until[partition] = max(offset, self._isolate_until.get(partition, 0))
        self.close()
        self.open()
        return []


def _unstorable_row(record: Record, error: Exception) -> tuple[Any, ...]:
    detail = storable(f"rejected at the ingest, and its quarantine row could not be built: "
                      f"{type(error).__name__}: {str(error)[:300]}")
    return (record.record_id, None, "", record.topic, record.partition, record.offset,
            [UNSTORABLE], UNSTORABLE, {}, detail, "", datetime.now(UTC))
