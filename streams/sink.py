"""Stage 4: batched, idempotent inserts into ClickHouse with clickhouse-connect.

Rows are buffered per table and flushed when `sink_batch_rows` are waiting or
`sink_flush_interval_s` has passed since the first one. A flush takes the buffered rows
(`take`) and inserts them (`insert`, which may run on another thread): the ledger, then
every other table, retrying with backoff; only when it returns may the caller commit
the Kafka offsets of the records behind the rows. Every table is a ReplacingMergeTree
keyed by the source record, so rows inserted twice (a crash between insert and commit)
collapse in `FINAL` queries. The ledger goes first so that a crash anywhere in a flush
leaves every landed row's outcome logged, for the replay to follow (`streams.worker`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from streams.errors import SinkError
from streams.join import EXAMPLE_COLUMNS
from streams.metrics import StreamMetrics
from streams.pipeline import BatchResult
from streams.rows import (
    CHAT_TURN_COLUMNS,
    ERROR_COLUMNS,
    FEEDBACK_COLUMNS,
    LEDGER_COLUMNS,
    QUARANTINE_COLUMNS,
)

logger = logging.getLogger(__name__)

#: (attribute of BatchResult, table, columns); the ledger is first on purpose.
TABLES: tuple[tuple[str, str, Sequence[str]], ...] = (
    ("ledger", "stream_ledger", LEDGER_COLUMNS),
    ("turns", "chat_turns", CHAT_TURN_COLUMNS),
    ("feedback", "feedback", FEEDBACK_COLUMNS),
    ("examples", "training_examples", EXAMPLE_COLUMNS),
    ("quarantine", "quarantine", QUARANTINE_COLUMNS),
    ("errors", "stream_errors", ERROR_COLUMNS),
)


class ClickHouseSink:
    """Buffers rows per table and inserts them in batches."""

    def __init__(
        self, client: Any, *, database: str, batch_rows: int, flush_interval_s: float,
        retry_max: int, metrics: StreamMetrics | None = None,
    ) -> None:
        self._client = client
        self._database = database
        self._batch_rows = batch_rows
        self._flush_interval_s = flush_interval_s
        self._retry_max = retry_max
        self._metrics = metrics
        self._buffers: dict[str, list[tuple[Any, ...]]] = {attr: [] for attr, _, _ in TABLES}
        self._first_row_s: float | None = None

    @property
    def buffered_rows(self) -> int:
        return sum(len(rows) for rows in self._buffers.values())

    def add(self, result: BatchResult) -> None:
        """Buffer the rows of one processed batch."""
        for attr, _, _ in TABLES:
            self._buffers[attr].extend(getattr(result, attr))
        if self._first_row_s is None and self.buffered_rows:
            self._first_row_s = time.monotonic()

    def add_rows(self, attr: str, rows: list[tuple[Any, ...]]) -> None:
        """Buffer rows for one table (by BatchResult attribute name)."""
        self._buffers[attr].extend(rows)
        if self._first_row_s is None and rows:
            self._first_row_s = time.monotonic()

    def due(self) -> bool:
        """True when the buffer is full enough or old enough to flush."""
        if self._first_row_s is None:
            return False
        return (self.buffered_rows >= self._batch_rows
                or time.monotonic() - self._first_row_s >= self._flush_interval_s)

    def take(self) -> dict[str, list[tuple[Any, ...]]]:
        """The buffered rows per table, which the buffer no longer holds, for `insert`."""
        taken = self._buffers
        self._buffers = {attr: [] for attr, _, _ in TABLES}
        self._first_row_s = None
        return taken

    def insert(self, rows_of: dict[str, list[tuple[Any, ...]]]) -> int:
        """Insert rows `take` returned, the ledger first; returns the rows inserted.

        Touches no buffer, so one thread may insert while another buffers the next rows.

        Raises:
            SinkError: an insert still failed after `sink_retry_max` retries.
        """
        inserted = 0
        for attr, table, columns in TABLES:
            rows = rows_of[attr]
            if rows:
                self._insert(table, columns, rows)
                inserted += len(rows)
        return inserted

    def _insert(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        delay_s = 0.2
        for attempt in range(self._retry_max + 1):
            started = time.perf_counter()
            try:
                self._client.insert(f"{self._database}.{table}", rows, column_names=columns)
            except Exception as e:  # clickhouse-connect raises several types
                if attempt == self._retry_max:
                    raise SinkError(
                        f"inserting {len(rows)} rows into {self._database}.{table} failed "
                        f"{attempt + 1} times ({e}); check that ClickHouse is up "
                        "(`flywheel stack status`) and migrated (`flywheel warehouse migrate`)"
                    ) from e
                logger.warning("insert into %s failed (attempt %d): %s; retrying in %.1f s",
                               table, attempt + 1, e, delay_s)
                time.sleep(delay_s)
                delay_s = min(delay_s * 2, 5.0)
                continue
            if self._metrics is not None:
                self._metrics.insert_latency.labels(table).observe(time.perf_counter() - started)
                self._metrics.rows_inserted.labels(table).inc(len(rows))
            return
