"""Stage 4: batched, idempotent inserts into ClickHouse with clickhouse-connect.

Rows are buffered per table and flushed when `sink_batch_rows` are waiting or
`sink_flush_interval_s` has passed since the first one. A flush takes the buffered rows
(`take`) and inserts them (`insert`, which may run on another thread): the ledger, then
every other table; only when it returns may the caller commit the Kafka offsets of the
records behind the rows. Every table is a ReplacingMergeTree keyed by the source record,
so rows inserted twice (a crash between insert and commit, a retry, a bisection) collapse
in `FINAL` queries. The ledger goes first so that a crash anywhere in a flush leaves
every landed row's outcome logged, for the replay to follow (`streams.worker`).

Three ways an insert fails, three answers:
- ClickHouse does not answer (down, restarting, unreachable): wait with backoff and try
  again, for as long as it takes; the worker pauses its consumption meanwhile. Only a
  worker that is stopping gives up (`give_up`), and then nothing is committed.
- ClickHouse answers and refuses the batch for a reason that is not one row's (too many
  parts, memory): retry `sink_retry_max` times, then bisect as below.
- ClickHouse (or the client, encoding) refuses the batch for its data: bisect. The
  halves are inserted on their own, down to single rows, so every row that can be stored
  is; a row that still fails alone is *unstorable*: its record is quarantined with the
  reason `unstorable` and the error, and its ledger entry says so. One poison record
  never blocks its partition. When no part of a batch could be stored and the error is
  not about data, the fault is the table's (dropped, renamed), not a row's: `SinkError`,
  so that a misconfiguration never diverts good records to the quarantine.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.exceptions import DataError, ProgrammingError

from streams.errors import SinkError
from streams.join import EXAMPLE_COLUMNS
from streams.metrics import StreamMetrics
from streams.pii import redact
from streams.pipeline import BatchResult
from streams.rows import (
    CHAT_TURN_COLUMNS,
    ERROR_COLUMNS,
    FEEDBACK_COLUMNS,
    LEDGER_COLUMNS,
    QUARANTINE_COLUMNS,
    UNSTORABLE,
    Record,
    storable,
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
_COLUMNS = {table: columns for _, table, columns in TABLES}

#: ClickHouse error codes that are about the rows sent (parsing, types, ranges, sizes,
#: too many partitions in one block): a smaller batch can succeed where a bigger failed.
_DATA_ERROR_CODES = frozenset({
    6, 26, 27, 38, 41, 53, 69, 70, 72, 117, 131, 252, 321, 349, 407, 691,
})
#: Raised by clickhouse-connect's encoders for a value its column cannot take.
_CLIENT_DATA_ERRORS = (DataError, ProgrammingError, UnicodeError, ValueError, TypeError,
                       OverflowError, struct.error, KeyError, IndexError, AttributeError)


def is_data_error(error: BaseException) -> bool:
    """True when `error` is about the rows of an insert, so that fewer rows may pass."""
    if isinstance(error, _CLIENT_DATA_ERRORS):
        return True
    return getattr(error, "code", None) in _DATA_ERROR_CODES


class ClickHouseSink:
    """Buffers rows per table and inserts them in batches.

    Args:
        give_up: polled while ClickHouse is unreachable; True ends the wait with
            `SinkError` (the worker is stopping). None waits for as long as it takes.
        backoff_max_s: the longest wait between two attempts.
    """

    def __init__(
        self, client: Any, *, database: str, batch_rows: int, flush_interval_s: float,
        retry_max: int, backoff_max_s: float = 5.0, metrics: StreamMetrics | None = None,
        give_up: Callable[[], bool] | None = None,
    ) -> None:
        self._client = client
        self._database = database
        self._batch_rows = batch_rows
        self._flush_interval_s = flush_interval_s
        self._retry_max = retry_max
        self._backoff_max_s = backoff_max_s
        self._metrics = metrics
        self._give_up = give_up or (lambda: False)
        self._buffers: dict[str, list[tuple[Any, ...]]] = {attr: [] for attr, _, _ in TABLES}
        self._first_row_s: float | None = None
        #: True while ClickHouse does not answer (the worker reports it and pauses).
        self.unreachable = False
        #: Records quarantined as unstorable, since start.
        self.unstorable = 0

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

    def full(self) -> bool:
        """True when a whole batch is waiting: time to stop reading until it can go."""
        return self.buffered_rows >= self._batch_rows

    def take(self) -> dict[str, list[tuple[Any, ...]]]:
        """The buffered rows per table, which the buffer no longer holds, for `insert`."""
        taken = self._buffers
        self._buffers = {attr: [] for attr, _, _ in TABLES}
        self._first_row_s = None
        return taken

    def insert(self, rows_of: dict[str, list[tuple[Any, ...]]]) -> int:
        """Insert rows `take` returned, the ledger first; returns the rows inserted.

        Touches no buffer, so one thread may insert while another buffers the next rows.
        Rows no smaller batch could store are quarantined as `unstorable` (module doc).

        Raises:
            SinkError: ClickHouse refused every part of a batch for a reason that is not
                its data, or `give_up` said so during an outage; nothing is committed.
        """
        inserted = 0
        unstorable: list[tuple[str, tuple[Any, ...], BaseException]] = []
        for attr, table, columns in TABLES:
            rows = rows_of.get(attr) or []
            if rows:
                failed = self._insert(table, columns, rows)
                inserted += len(rows) - len(failed)
                unstorable.extend((table, row, error) for row, error in failed)
        if unstorable:
            inserted += self._set_aside(unstorable)
        return inserted

    # -- one table ----------------------------------------------------------------------

    def _insert(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
                ) -> list[tuple[tuple[Any, ...], BaseException]]:
        """Insert `rows`; returns those that could not be stored, each with its error."""
        error = self._attempt(table, columns, rows)
        delay_s = 0.2
        for attempt in range(self._retry_max):
            if error is None or is_data_error(error):
                break
            logger.warning("insert of %d rows into %s refused (attempt %d): %s; retrying "
                           "in %.1f s", len(rows), table, attempt + 1, error, delay_s)
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, self._backoff_max_s)
            error = self._attempt(table, columns, rows)
        if error is None:
            return []
        failed, stored = self._bisect(table, columns, rows, error,
                                      systemic=not is_data_error(error))
        if stored == 0 and not is_data_error(error):
            raise SinkError(
                f"inserting {len(rows)} rows into {self._database}.{table} failed "
                f"{self._retry_max + 1} times, and so did every part of the batch ({error}); "
                "check that the table exists (`flywheel warehouse migrate`) and the "
                "server's log") from error
        return failed

    def _bisect(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]],
                error: BaseException, *, systemic: bool = False,
                ) -> tuple[list[tuple[tuple[Any, ...], BaseException]], int]:
        """Insert the halves of a refused batch, recursively; (rows left over, rows stored).

        Args:
            systemic: the batch's error was not about data; when both halves fail the same
                way, the table is at fault and nothing is bisected further (none stored).
        """
        if len(rows) == 1:
            return [(rows[0], error)], 0
        middle = len(rows) // 2
        halves = (rows[:middle], rows[middle:])
        errors = [self._attempt(table, columns, half) for half in halves]
        if systemic and all(e is not None and not is_data_error(e) for e in errors):
            return [(row, error) for row in rows], 0
        failed: list[tuple[tuple[Any, ...], BaseException]] = []
        stored = 0
        for half, half_error in zip(halves, errors, strict=True):
            if half_error is None:
                stored += len(half)
                continue
            more, some = self._bisect(table, columns, half, half_error)
            failed.extend(more)
            stored += some
        return failed, stored

    def _attempt(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
                 ) -> BaseException | None:
        """One insert; waits out an outage first. None when the rows are in.

        Raises:
            SinkError: `give_up` became true while ClickHouse did not answer.
        """
        delay_s = 0.2
        waited_s = 0.0
        while True:
            started = time.perf_counter()
            try:
                self._client.insert(f"{self._database}.{table}", rows, column_names=columns)
            except Exception as e:  # clickhouse-connect raises several types
                if self._answers():
                    self._set_unreachable(False)
                    return e
                self._set_unreachable(True, e)
                if self._give_up():
                    raise SinkError(
                        f"ClickHouse did not answer for {waited_s:.0f} s and the worker is "
                        f"stopping; {len(rows)} rows for {table} were not inserted and their "
                        "offsets stay uncommitted") from e
                time.sleep(delay_s)
                waited_s += delay_s
                delay_s = min(delay_s * 2, self._backoff_max_s)
                continue
            self._set_unreachable(False)
            if self._metrics is not None:
                self._metrics.insert_latency.labels(table).observe(time.perf_counter() - started)
                self._metrics.rows_inserted.labels(table).inc(len(rows))
            return None

    def _answers(self) -> bool:
        try:
            self._client.command("SELECT 1")
        except Exception:  # any failure to answer is an outage
            return False
        return True

    def _set_unreachable(self, unreachable: bool, error: BaseException | None = None) -> None:
        if unreachable and not self.unreachable:
            logger.warning("ClickHouse does not answer (%s); waiting for it, consumption "
                           "paused", error)
        elif self.unreachable and not unreachable:
            logger.info("ClickHouse answers again; inserting")
        self.unreachable = unreachable

    # -- unstorable rows ----------------------------------------------------------------

    def _set_aside(self, unstorable: list[tuple[str, tuple[Any, ...], BaseException]]) -> int:
        """Quarantine the records of rows no insert could store; returns rows inserted."""
        now = datetime.now(UTC)
        quarantine: list[tuple[Any, ...]] = []
        ledger: list[tuple[Any, ...]] = []
        for table, row, error in unstorable:
            columns = _COLUMNS[table]
            values = dict(zip(columns, row, strict=False))
            logger.error("a %s row could not be stored (%s: %s); its record is quarantined "
                         "as %s", table, type(error).__name__, str(error)[:300], UNSTORABLE)
            if "source_topic" not in values or table == "stream_ledger":
                # A training example or a ledger entry: no record of its own to quarantine.
                continue
            topic, partition, offset = (values["source_topic"], values["source_partition"],
                                        values["source_offset"])
            event_id = values.get("event_id")
            detail = redact(storable(
                f"its {table} row could not be stored: {type(error).__name__}: "
                f"{str(error)[:300]}")).text
            quarantine.append((
                Record(topic, partition, offset, None, b"").record_id, event_id,
                storable(str(values.get("tenant") or "")), topic, partition, offset,
                [UNSTORABLE], UNSTORABLE, {}, detail, "", now))
            if table != "quarantine":  # a quarantined record's ledger entry stays as is
                ledger.append((topic, partition, offset, event_id, "quarantined", UNSTORABLE))
        inserted = 0
        for table, rows in (("quarantine", quarantine), ("stream_ledger", ledger)):
            if not rows:
                continue
            left = self._insert(table, _COLUMNS[table], rows)
            inserted += len(rows) - len(left)
            for row, error in left:  # nothing simpler to store: say so loudly, move on
                pointer = row[3:6] if table == "quarantine" else row[0:3]
                logger.error("the unstorable record %s[%s]@%s could not be set aside in %s "
                             "either (%s); it is only in its Kafka topic", *pointer, table,
                             error)
        self.unstorable += len(quarantine)
        if self._metrics is not None and quarantine:
            self._metrics.rejections.labels("sink", UNSTORABLE).inc(len(quarantine))
        return inserted
