"""The stream worker: reads chat and feedback events, runs the pipeline, lands the results.

Why a confluent-kafka consumer loop and not a Faust agent. The issue asks for offsets
committed only after the ClickHouse insert succeeded. Faust acks an event when the agent
moves past it and commits acked offsets on its own timer; `stream.noack()` plus a manual
`stream.ack(event)` after the insert is the documented way around it (robinhood/faust#191,
faust-streaming#189), but faust-streaming 0.15.3 still commits past an in-flight message in
`Consumer._new_offset` when the unacked one sits right at the committed head
(faust-streaming#606; the fix, PR #707, is unmerged), which is exactly the state a batching
sink is in. That is silent loss after `kill -9`, the one thing this worker must not do.
So the worker drives the pipeline from a plain consumer with `enable.auto.commit=false`
and commits each partition's offsets itself, synchronously, after the sink's flush
returned. The feedback join keeps its state in memory with a TTL and uses the warehouse
as its durable side (see `streams.join`), instead of a Faust table and changelog topic.

At-least-once plus idempotent tables gives exactly-once results: every row is keyed by its
source record, and each flush writes the ledger (every record's outcome) before the other
tables. A restarted worker reads the ledger from its committed offsets on and gives each
replayed record its logged outcome (`streams.pipeline`), so a replay with a cold duplicate
window or fresh cap counters lands the same rows again, never a second table's row.
Replayed records still pass through every stage, so the duplicate window, the caps and
the join's prompts take them in as they would any record.

A flush's inserts run on a thread of their own while the loop processes the next
batches (ClickHouse works on the other core meanwhile): one flush at a time, in order,
and the offsets behind a flush are committed only once all of its rows are inserted. A
flush that comes due while the previous one is still inserting waits for it.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from deploy.clickhouse.client import get_client
from streams.errors import WorkerError
from streams.heap import settle_after_loading
from streams.ingest_quarantine import IngestQuarantineReader
from streams.join_state import load_pending, lookup_turns
from streams.metrics import StreamMetrics
from streams.pipeline import BatchResult, Logged, Processor
from streams.pool import PreparePool
from streams.quarantine import QuarantineProducer
from streams.rows import Record
from streams.sink import ClickHouseSink
from streams.topics import CHAT_EVENTS, ERRORS, FEEDBACK_EVENTS, QUARANTINE

if TYPE_CHECKING:
    from deploy.settings import FlywheelSettings

logger = logging.getLogger(__name__)

_LAG_INTERVAL_S = 5.0


@dataclass
class _InFlight:
    """A flush whose inserts run on the sink's thread, and what to commit when they are in."""

    inserted: Future[int]
    offsets: dict[tuple[str, int], int]
    ingest_offsets: dict[int, int]


class StreamWorker:
    """One worker of the consumer group; several share the partitions."""

    def __init__(
        self,
        settings: FlywheelSettings,
        *,
        chat_topic: str = CHAT_EVENTS.name,
        feedback_topic: str = FEEDBACK_EVENTS.name,
        quarantine_topic: str = QUARANTINE.name,
        errors_topic: str = ERRORS.name,
        group_id: str | None = None,
        serve_metrics: bool = True,
        metrics_port: int | None = None,
        land_ingest_rejections: bool = True,
    ) -> None:
        """One worker; nothing connects before `run()`.

        Args:
            metrics_port: where /metrics is served; None is `settings.metrics.port`, 0 off
                (so a second worker on one host can take another port, or none).
            land_ingest_rejections: also consume the quarantine topic and land the HTTP
                ingest's rejections (see `streams.ingest_quarantine`).
        """
        self._settings = settings
        self._options = settings.streams
        self._topics = (chat_topic, feedback_topic)
        self._errors_topic = errors_topic
        self._quarantine_topic = quarantine_topic
        self._group_id = group_id or self._options.consumer_group
        port = settings.metrics.port if metrics_port is None else metrics_port
        self._metrics_port = port if serve_metrics else 0
        self._land_ingest_rejections = land_ingest_rejections
        self._ingest: IngestQuarantineReader | None = None
        self.metrics = StreamMetrics()
        self._pool = (PreparePool(self._options, chat_topic=chat_topic,
                                  feedback_topic=feedback_topic,
                                  processes=self._options.workers_processes)
                      if self._options.workers_processes else None)
        self.processor = Processor(self._options, chat_topic=chat_topic,
                                   feedback_topic=feedback_topic,
                                   prepare=self._pool.prepare if self._pool else None)
        self._stop = threading.Event()
        self._offsets: dict[tuple[str, int], int] = {}
        self._logged: dict[tuple[str, int], dict[int, Logged]] = {}
        self._consumer: Consumer | None = None
        self._sink: ClickHouseSink | None = None
        self._client: Any = None
        self._sink_client: Any = None  # the sink thread's own: a client runs one query at a time
        self._inserting: ThreadPoolExecutor | None = None
        self._in_flight: _InFlight | None = None
        self._quarantine: QuarantineProducer | None = None
        self._errors: Producer | None = None
        self._last_lag_s = 0.0

    @property
    def metrics_port(self) -> int:
        """The port /metrics is served on once running; 0 when it is not served."""
        return self._metrics_port

    def stop(self) -> None:
        """Ask the loop to finish: it flushes the sink, commits and leaves the group."""
        self._stop.set()

    def run(self) -> None:
        """Consume until `stop()` (or SIGTERM/SIGINT in the main thread); flush on the way out.

        Raises:
            WorkerError: Kafka or ClickHouse is unreachable at start.
            SinkError: ClickHouse kept refusing a batch; offsets stay uncommitted, so a
                restarted worker processes those records again.
        """
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self._stop.set())
        try:
            if self._pool is not None:  # spawned before any Kafka client exists
                self._pool.open()  # its processes load their models now
            self._open()
            self.processor.warm_up()  # models load now, not inside the first poll window
            if threading.current_thread() is threading.main_thread():
                settle_after_loading()  # a process of its own (see streams.heap)
            assert self._consumer is not None and self._sink is not None
            logger.info("stream worker started: group=%s topics=%s processes=%d",
                        self._group_id, self._topics, 1 + self._options.workers_processes)
            while not self._stop.is_set():
                messages = self._consumer.consume(num_messages=self._options.poll_batch_max,
                                                  timeout=0.2)
                if messages:
                    self._handle(messages)
                if self._ingest is not None:
                    rows = self._ingest.poll(max_records=self._options.poll_batch_max)
                    if rows:
                        self._sink.add_rows("quarantine", rows)
                if self._sink.due():
                    self._flush_and_commit(wait=False)
                elif self._in_flight is not None and self._in_flight.inserted.done():
                    self._finish_in_flight()
                self._report_lag()
            self._flush_and_commit()
        finally:
            self._close()
        logger.info("stream worker stopped")

    # -- lifecycle -----------------------------------------------------------------------

    def _open(self) -> None:
        settings = self._settings
        try:
            self._client = get_client(settings)
            self._sink_client = get_client(settings)
        except Exception as e:
            raise WorkerError(f"ClickHouse at {settings.clickhouse.http_url} is unreachable "
                              f"({e}); run `flywheel stack up clickhouse`") from e
        options = self._options
        self._inserting = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink")
        self._sink = ClickHouseSink(
            self._sink_client, database=settings.clickhouse.database,
            batch_rows=options.sink_batch_rows, flush_interval_s=options.sink_flush_interval_s,
            retry_max=options.sink_retry_max, metrics=self.metrics)
        self._quarantine = QuarantineProducer(settings.kafka, producer_name="flywheel-streams",
                                              topic=self._quarantine_topic)
        self._errors = Producer({**settings.kafka.client_config(), "enable.idempotence": True,
                                 "acks": "all"}, logger=logger)
        self._consumer = Consumer({
            **settings.kafka.client_config(),
            "group.id": self._group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": options.session_timeout_ms,
            "heartbeat.interval.ms": max(1000, options.session_timeout_ms // 5),
            "max.poll.interval.ms": 300_000,
            "partition.assignment.strategy": "range",
        }, logger=logger)
        try:
            self._consumer.list_topics(timeout=10)
        except KafkaException as e:
            raise WorkerError(f"Kafka at {settings.kafka.bootstrap} is unreachable ({e}); "
                              "run `flywheel stack up kafka`") from e
        self._consumer.subscribe(list(self._topics), on_assign=self._on_assign,
                                 on_revoke=self._on_revoke)
        if self._land_ingest_rejections:
            self._ingest = IngestQuarantineReader(
                settings, topic=self._quarantine_topic, group_id=self._group_id,
                on_revoke=self._flush_and_commit, metrics=self.metrics)
            self._ingest.open()
        if self._metrics_port:
            self.metrics.serve(host=settings.metrics.host, port=self._metrics_port)

    def _close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
        if self._pool is not None:
            self._pool.close()
        if self._ingest is not None:
            self._ingest.close()
        if self._quarantine is not None:
            self._quarantine.close()
        if self._errors is not None:
            self._errors.flush(30)
        if self._inserting is not None:
            self._inserting.shutdown(wait=True)  # only after a failure can one be running
        for client in (self._client, self._sink_client):
            if client is not None:
                client.close()

    # -- the loop ------------------------------------------------------------------------

    def _handle(self, messages: list[Any]) -> None:
        started = time.perf_counter()
        records = []
        read: Counter[str] = Counter()
        logged: dict[tuple[str, int, int], Logged] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    logger.warning("consumer error: %s", error.str())
                continue
            record = Record.of(message)
            key = (record.topic, record.partition)
            self._offsets[key] = record.offset + 1
            read[record.topic] += 1
            prior = self._logged.get(key, {}).pop(record.offset, None)
            if prior is not None:
                logged[(record.topic, record.partition, record.offset)] = prior
            records.append(record)
        for topic, count in read.items():  # one update per topic, not per record
            self.metrics.records_in.labels(topic).inc(count)
        result = self.processor.process(records, logged)
        for outcome, count in result.replays.items():
            self.metrics.replays.labels(outcome).inc(count)
        self._publish(result)
        self.metrics.processing_latency.observe(time.perf_counter() - started)

    def _publish(self, result: BatchResult) -> None:
        assert self._sink is not None and self._quarantine is not None
        for quarantined in result.quarantined:
            self._quarantine.send(quarantined)
        for row in result.errors:
            self._send_error(row)
        self._sink.add(result)
        for (stage, outcome), count in result.counts.items():
            if stage == "sink":
                self.metrics.records_out.labels(outcome).inc(count)
            elif outcome == "error":
                self.metrics.records_out.labels("error").inc(count)
            elif outcome == "redacted":
                self.metrics.redacted.inc(count)
            else:
                self.metrics.records_out.labels("quarantined").inc(count)
                self.metrics.rejections.labels(stage, outcome).inc(count)

    def _send_error(self, row: tuple[Any, ...]) -> None:
        assert self._errors is not None
        topic, partition, offset, event_id, stage, error_type, message, failed_at = row
        body = {"component": "streams.worker", "stage": stage, "error_type": error_type,
                "message": message, "topic": topic, "partition": partition, "offset": offset,
                "event_id": str(event_id) if event_id else None,
                "failed_at": failed_at.isoformat()}
        self._errors.produce(self._errors_topic, json.dumps(body).encode(), key=b"streams")
        self._errors.poll(0)

    def _flush_and_commit(self, *, wait: bool = True) -> None:
        """Quarantine and error topics first, then ClickHouse, then the offsets.

        Args:
            wait: return only once the rows are inserted and the offsets committed; with
                False (the loop), the inserts run on the sink's thread and the commit
                follows them (`_finish_in_flight`).
        """
        assert self._sink is not None and self._inserting is not None
        self._finish_in_flight()
        ingest_pending = self._ingest is not None and self._ingest.has_uncommitted
        if not self._offsets and not self._sink.buffered_rows and not ingest_pending:
            return
        self._resolve_join()
        assert self._quarantine is not None and self._errors is not None
        self._quarantine.flush()
        if self._errors.flush(30) > 0:
            raise WorkerError("the errors topic did not take every message in 30 s; "
                              "check the Kafka broker")
        rows, offsets, self._offsets = self._sink.take(), self._offsets, {}
        self._in_flight = _InFlight(
            self._inserting.submit(self._sink.insert, rows), offsets,
            self._ingest.take_offsets() if self._ingest is not None else {})
        if wait:
            self._finish_in_flight()

    def _finish_in_flight(self) -> None:
        """Wait for the flush in flight, if any, then commit the offsets behind its rows.

        Raises:
            SinkError: ClickHouse kept refusing its rows; nothing of it is committed.
        """
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is None:
            return
        in_flight.inserted.result()
        assert self._consumer is not None
        if in_flight.offsets:
            self._consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o
                                           in in_flight.offsets.items()], asynchronous=False)
            self.metrics.commits.inc()
        if self._ingest is not None:
            self._ingest.commit(in_flight.ingest_offsets)

    def _resolve_join(self) -> None:
        join = self.processor.join
        pending = join.pending
        if pending:
            turn_ids = sorted({str(p.event.turn_event_id) for p in pending})
            turns, rejected = lookup_turns(self._client,
                                           database=self._settings.clickhouse.database,
                                           ids=turn_ids)
            rows = join.resolve(turns, rejected)
            if rows:
                assert self._sink is not None
                self._sink.add_rows("examples", rows)
        join.expire()
        for outcome, count in join.counts.items():
            self.metrics.join_outcomes.labels(outcome).inc(count)
        join.counts.clear()

    def _report_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag_s < _LAG_INTERVAL_S or self._consumer is None:
            return
        self._last_lag_s = now
        try:
            for tp in self._consumer.position(self._consumer.assignment()):
                # The high watermark the last fetch brought back: an uncached read is a
                # broker round trip per partition that stalled the loop for seconds.
                _, high = self._consumer.get_watermark_offsets(tp, cached=True)
                if tp.offset >= 0 and high >= 0:
                    self.metrics.lag.labels(tp.topic, str(tp.partition)).set(high - tp.offset)
        except KafkaException as e:
            logger.debug("lag not measured: %s", e)

    # -- rebalances ----------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = consumer.committed(partitions, timeout=30)
        self._logged.update(self._ledger({(tp.topic, tp.partition): max(tp.offset, 0)
                                          for tp in committed}))
        feedback_topic = self._topics[1]
        self.processor.join.restore(load_pending(
            self._client, database=self._settings.clickhouse.database, topic=feedback_topic,
            partitions=[tp.partition for tp in committed if tp.topic == feedback_topic],
            ttl_s=self._options.join_ttl_s))
        logger.info("assigned %s", [(tp.topic, tp.partition, tp.offset) for tp in committed])

    def _ledger(self, starts: dict[tuple[str, int], int]
                ) -> dict[tuple[str, int], dict[int, Logged]]:
        """Per partition, the outcomes a previous run logged from its start offset on.

        One query for every partition assigned (a rebalance can hand over dozens).
        """
        logged: dict[tuple[str, int], dict[int, Logged]] = {key: {} for key in starts}
        if not starts:
            return logged
        keys = list(starts)
        rows = self._client.query(
            f"SELECT source_topic, source_partition, source_offset, outcome, reason "
            f"FROM {self._settings.clickhouse.database}.stream_ledger FINAL "
            "WHERE (source_topic, source_partition) IN {keys:Array(Tuple(String, UInt32))} "
            "AND source_offset >= {starts:Array(UInt64)}"
            "[indexOf({keys:Array(Tuple(String, UInt32))}, (source_topic, source_partition))]",
            parameters={"keys": keys, "starts": [starts[k] for k in keys]}).result_rows
        for topic, partition, offset, outcome, reason in rows:
            logged[(topic, int(partition))][int(offset)] = Logged(outcome, reason)
        for (topic, partition), offsets in logged.items():
            if offsets:
                logger.info("%s[%d]: %d records from offset %d have a logged outcome; "
                            "their replay follows it", topic, partition, len(offsets),
                            starts[(topic, partition)])
        return logged

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Our uncommitted offsets of these partitions must land and commit before another
        # worker starts on them.
        self._flush_and_commit()
        for tp in partitions:
            self._logged.pop((tp.topic, tp.partition), None)
            self.processor.forget_partition(tp.topic, tp.partition)


def run_worker(settings: FlywheelSettings, **options: Any) -> None:
    """Build a worker and run it until SIGTERM/SIGINT (the CLI's entry point)."""
    StreamWorker(settings, **options).run()


def _main(argv: Iterable[str] | None = None) -> int:
    """`python -m streams.worker`: the process tests and the local stack start."""
    import argparse
    import os

    from deploy.clickhouse.config import SETTINGS_ENV, settings_from_json
    from deploy.settings import load_settings

    parser = argparse.ArgumentParser(description="Flywheel stream worker")
    parser.add_argument("--chat-topic", default=CHAT_EVENTS.name)
    parser.add_argument("--feedback-topic", default=FEEDBACK_EVENTS.name)
    parser.add_argument("--quarantine-topic", default=QUARANTINE.name)
    parser.add_argument("--errors-topic", default=ERRORS.name)
    parser.add_argument("--group", default=None)
    parser.add_argument("--no-metrics", action="store_true")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="serve /metrics here (default metrics.port; 0 = off)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    # The entry point: the one place that reads the environment.
    raw = os.environ.get(SETTINGS_ENV)
    settings = settings_from_json(raw) if raw else load_settings()
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_worker(settings, chat_topic=args.chat_topic, feedback_topic=args.feedback_topic,
               quarantine_topic=args.quarantine_topic, errors_topic=args.errors_topic,
               group_id=args.group, serve_metrics=not args.no_metrics,
               metrics_port=args.metrics_port)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
