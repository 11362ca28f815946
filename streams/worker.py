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
from prometheus_client import Gauge

from deploy.clickhouse.client import get_client
from streams.errors import SinkError, WorkerError
from streams.faults import DELIVERY_TIMEOUT_MS, Deliveries, Throttle, retrying
from streams.heap import settle_after_loading
from streams.join_state import load_pending, lookup_turns
from streams.ledger import logged_outcomes
from streams.metrics import StreamMetrics
from streams.pipeline import BatchResult, Logged, Processor
from streams.pool import PreparePool
from streams.quarantine import QuarantineProducer
from streams.rejections import IngestRejections
from streams.rows import Record
from streams.sink import ClickHouseSink
from streams.topics import CHAT_EVENTS, ERRORS, FEEDBACK_EVENTS, QUARANTINE

if TYPE_CHECKING:
    from deploy.settings import FlywheelSettings

logger = logging.getLogger(__name__)

_LAG_INTERVAL_S = 5.0
#: The worker's ClickHouse clients give up on one request after this long (a hung server
#: must not hold the loop for clickhouse-connect's default of 300 s).
_CLICKHOUSE_TIMEOUT_S = 60
#: Name of the gauge `flywheel apps up` waits on (see `deploy.local.apps`).
READY_METRIC = "flywheel_streams_ready"


@dataclass
class _InFlight:
    """A flush whose inserts run on the sink's thread, and what to commit when they are in."""

    inserted: Future[int]
    offsets: dict[tuple[str, int], int]
    ingest_offsets: dict[int, int]
    deliveries: Deliveries


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
        self._ingest: IngestRejections | None = None
        self.metrics = StreamMetrics()
        registry = self.metrics.registry
        self._ready = Gauge(READY_METRIC, "1 once the group assigned this worker its "
                            "partitions (perhaps none) and it consumes them.", registry=registry)
        self._paused_gauge = Gauge("flywheel_streams_paused", "1 while consumption is paused "
                                   "because ClickHouse cannot take the rows read yet.",
                                   registry=registry)
        self._pool = (PreparePool(self._options, chat_topic=chat_topic,
                                  feedback_topic=feedback_topic,
                                  processes=self._options.workers_processes)
                      if self._options.workers_processes else None)
        self.processor = Processor(self._options, chat_topic=chat_topic,
                                   feedback_topic=feedback_topic,
                                   prepare=self._pool.prepare if self._pool else None)
        self._stop = threading.Event()
        self._stop_by_s: float | None = None  # when stopping: the end of the grace period
        self._failed = False  # a flush failed: nothing may be committed any more
        self._offsets: dict[tuple[str, int], int] = {}
        self._logged: dict[tuple[str, int], dict[int, Logged]] = {}
        self._assigned: set[tuple[str, int]] = set()
        self._paused: list[TopicPartition] = []  # what `_hold` paused, to resume exactly
        self._consumer: Consumer | None = None
        self._sink: ClickHouseSink | None = None
        self._client: Any = None
        self._sink_client: Any = None  # the sink thread's own: a client runs one query at a time
        self._inserting: ThreadPoolExecutor | None = None
        self._in_flight: _InFlight | None = None
        self._deliveries = Deliveries()  # of the rows buffered now
        self._to_commit: dict[tuple[str, int], int] = {}  # stored, commit not yet accepted
        self._ingest_to_commit: dict[int, int] = {}
        self._next_commit_s = 0.0
        self._commit_delay_s = 0.2
        self._quarantine: QuarantineProducer | None = None
        self._errors: Producer | None = None
        self._last_lag_s = 0.0
        self._last_full_lookup_s = float("-inf")
        self._throttle = Throttle()

    @property
    def metrics_port(self) -> int:
        """The port /metrics is served on once running; 0 when it is not served."""
        return self._metrics_port

    def stop(self) -> None:
        """Ask the loop to finish: it flushes the sink, commits and leaves the group."""
        self._stop.set()

    def run(self) -> None:
        """Consume until `stop()` (or SIGTERM/SIGINT in the main thread); flush on the way out.

        Outages of Kafka or ClickHouse do not end it: consumption pauses, commits wait, and
        the loop goes on when they are back (see `streams.sink`, `streams.faults`).

        Raises:
            WorkerError: Kafka or ClickHouse is unreachable at start, or Kafka reported a
                fatal error.
            SinkError: ClickHouse refused every part of a batch for a reason that is not
                its data (no table); offsets stay uncommitted, so a restarted worker
                processes those records again.
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
            logger.info("stream worker started: group=%s topics=%s processes=%d",
                        self._group_id, self._topics, 1 + self._options.workers_processes)
            try:
                while not self._stop.is_set():
                    self._step()
            except BaseException:
                # Offsets of records read before the failure may be recorded already: the
                # shutdown path (close -> revoke) must not commit them.
                self._failed = True
                raise
            self._drain()
        finally:
            self._close()
        logger.info("stream worker stopped")

    # -- lifecycle -----------------------------------------------------------------------

    def _giving_up(self) -> bool:
        """True once a stop was asked and its grace period is over."""
        if not self._stop.is_set():
            return False
        if self._stop_by_s is None:
            self._stop_by_s = time.monotonic() + self._options.shutdown_grace_s
        return time.monotonic() > self._stop_by_s

    def _open(self) -> None:
        settings = self._settings
        try:
            self._client = get_client(settings, send_receive_timeout=_CLICKHOUSE_TIMEOUT_S)
            self._sink_client = get_client(settings, send_receive_timeout=_CLICKHOUSE_TIMEOUT_S)
        except Exception as e:
            raise WorkerError(f"ClickHouse at {settings.clickhouse.http_url} is unreachable "
                              f"({e}); run `flywheel stack up clickhouse`") from e
        options = self._options
        self._inserting = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink")
        self._sink = ClickHouseSink(
            self._sink_client, database=settings.clickhouse.database,
            batch_rows=options.sink_batch_rows, flush_interval_s=options.sink_flush_interval_s,
            retry_max=options.sink_retry_max, backoff_max_s=options.sink_backoff_max_s,
            metrics=self.metrics, give_up=self._giving_up)
        self._quarantine = QuarantineProducer(
            settings.kafka, producer_name="flywheel-streams", topic=self._quarantine_topic,
            config_overrides={"delivery.timeout.ms": DELIVERY_TIMEOUT_MS})
        self._errors = Producer({**settings.kafka.client_config(), "enable.idempotence": True,
                                 "acks": "all", "delivery.timeout.ms": DELIVERY_TIMEOUT_MS},
                                logger=logger)
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
                                 on_revoke=self._on_revoke, on_lost=self._on_lost)
        if self._land_ingest_rejections:
            self._ingest = IngestRejections(
                settings, topic=self._quarantine_topic, group_id=self._group_id,
                on_revoke=self._flush_and_commit, metrics=self.metrics)
            self._ingest.open()
        if self._metrics_port:
            self.metrics.serve(host=settings.metrics.host, port=self._metrics_port)

    def _drain(self) -> None:
        """The last flush and commit, within `shutdown_grace_s` of the stop."""
        self._giving_up()  # starts the grace period
        try:
            self._flush_and_commit()
        except (SinkError, WorkerError) as e:
            self._failed = True
            logger.error("the last flush did not finish (%s); its offsets stay uncommitted "
                         "and a restarted worker reads those records again", e)

    def _close(self) -> None:
        """Close everything, each step on its own: one failing must not skip the others."""
        self._ready.set(0)
        grace_s = self._options.shutdown_grace_s
        steps: list[tuple[str, Any]] = [
            ("consumer", self._consumer.close if self._consumer is not None else None),
            ("prepare pool", self._pool.close if self._pool is not None else None),
            ("quarantine reader", self._ingest.close if self._ingest is not None else None),
            ("quarantine producer", (lambda: self._quarantine.close(grace_s))
             if self._quarantine is not None else None),
            ("errors producer", self._flush_errors_producer if self._errors else None),
            # Only after a failure can an insert still be running.
            ("sink thread", (lambda: self._inserting.shutdown(wait=True))
             if self._inserting is not None else None),
            ("ClickHouse client", self._client.close if self._client is not None else None),
            ("sink's ClickHouse client",
             self._sink_client.close if self._sink_client is not None else None),
        ]
        for name, close in steps:
            if close is None:
                continue
            try:
                close()
            except Exception as e:  # noqa: BLE001 - the rest must close all the same
                logger.error("closing the %s failed (%s: %s); closing the rest", name,
                             type(e).__name__, e)

    def _flush_errors_producer(self) -> None:
        assert self._errors is not None
        left = self._errors.flush(self._options.shutdown_grace_s)
        if left:
            raise WorkerError(f"{left} messages for {self._errors_topic} were not delivered; "
                              "their offsets were not committed, so they are sent again")

    # -- the loop ------------------------------------------------------------------------

    def _step(self) -> None:
        assert self._sink is not None and self._errors is not None
        self._settle()
        # A whole batch waits behind a flush that cannot finish (ClickHouse is down or
        # slow): stop reading, but keep polling, so the group keeps us and we keep up.
        self._hold(self._in_flight is not None and self._sink.full())
        messages = self._consume()
        if messages:
            self._handle(messages)
        if self._ingest is not None and not self._paused:
            try:
                rows = self._ingest.poll(max_records=self._options.poll_batch_max)
            except KafkaException as e:
                self._throttle.warn("ingest", "reading the ingest's rejections failed (%s); "
                                    "trying again", e)
                rows = []
            if rows:
                self._sink.add_rows("quarantine", rows)
        if self._in_flight is None and self._sink.due():
            self._start_flush()
        self._errors.poll(0)
        self._report_lag()

    def _consume(self) -> list[Any]:
        assert self._consumer is not None
        try:
            return self._consumer.consume(num_messages=self._options.poll_batch_max,
                                          timeout=0.2)
        except KafkaException as e:
            error = e.args[0] if e.args and isinstance(e.args[0], KafkaError) else None
            if error is not None and error.fatal():
                raise WorkerError(f"Kafka reported a fatal error ({error.str()}); the "
                                  "worker restarts from its committed offsets") from e
            self._throttle.warn("consume", "consuming failed (%s); trying again", e)
            time.sleep(0.5)
            return []

    def _hold(self, hold: bool) -> None:
        if hold == bool(self._paused) or self._consumer is None:
            return
        try:
            if hold:
                partitions = self._consumer.assignment()
                if not partitions:
                    return
                self._consumer.pause(partitions)
                self._paused = partitions
            else:
                # Exactly what was paused: the assignment may have changed since (a pause
                # outlives losing and getting back a partition in librdkafka).
                self._consumer.resume(self._paused)
                self._paused = []
        except KafkaException as e:
            self._throttle.warn("pause", "pausing or resuming consumption failed: %s", e)
            return
        self._paused_gauge.set(1 if hold else 0)
        if hold:
            logger.warning("consumption paused: a batch of %d rows waits for the flush "
                           "before it", self._sink.buffered_rows if self._sink else 0)
        else:
            logger.info("consumption resumed")

    def _handle(self, messages: list[Any]) -> None:
        started = time.perf_counter()
        records = []
        read: Counter[str] = Counter()
        logged: dict[tuple[str, int, int], Logged] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    self._throttle.warn(f"consumer:{error.code()}", "consumer error: %s",
                                        error.str())
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
        deliveries = self._deliveries
        for quarantined in result.quarantined:
            deliveries.sent()
            self._quarantine.send(quarantined,
                                  on_delivery=lambda report: deliveries.delivered(report.ok))
        for row in result.errors:
            self._send_error(row, deliveries)
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

    def _send_error(self, row: tuple[Any, ...], deliveries: Deliveries) -> None:
        assert self._errors is not None
        topic, partition, offset, event_id, stage, error_type, message, failed_at = row
        body = {"component": "streams.worker", "stage": stage, "error_type": error_type,
                "message": message, "topic": topic, "partition": partition, "offset": offset,
                "event_id": str(event_id) if event_id else None,
                "failed_at": failed_at.isoformat()}
        deliveries.sent()
        self._errors.produce(self._errors_topic, json.dumps(body).encode(), key=b"streams",
                             on_delivery=deliveries.on_kafka_report)
        self._errors.poll(0)

    # -- flushes and commits ---------------------------------------------------------------

    def _flush_and_commit(self) -> None:
        """Land everything read so far and commit it; returns once done (or given up).

        Used on revoke, on assign and at the end; the loop flushes without waiting.

        Raises:
            SinkError, WorkerError: a flush failed or the stop's grace period ran out;
                nothing more is committed.
        """
        if self._sink is None or self._failed:
            return
        self._settle(wait=True)
        ingest_pending = self._ingest is not None and self._ingest.has_uncommitted
        if self._offsets or self._sink.buffered_rows or ingest_pending:
            self._start_flush()
            self._settle(wait=True)
        else:
            self._commit()

    def _start_flush(self) -> None:
        """Take the buffered rows and insert them on the sink's thread."""
        assert self._sink is not None and self._inserting is not None
        self._resolve_join()
        rows, offsets, self._offsets = self._sink.take(), self._offsets, {}
        deliveries, self._deliveries = self._deliveries, Deliveries()
        self._in_flight = _InFlight(
            self._inserting.submit(self._sink.insert, rows), offsets,
            self._ingest.take_offsets() if self._ingest is not None else {}, deliveries)

    def _settle(self, *, wait: bool = False) -> None:
        """Commit the flush in flight once its rows are in and its messages delivered.

        Without `wait`, returns at once when it is not finished yet (and retries commits
        that failed before).

        Raises:
            SinkError: the flush's inserts failed; nothing of it is committed, ever.
            WorkerError: waiting, the stop's grace period ran out before Kafka took the
                flush's messages.
        """
        in_flight = self._in_flight
        if in_flight is None:
            self._commit()
            return
        if not wait and not (in_flight.inserted.done() and in_flight.deliveries.done):
            self._commit()
            return
        try:
            in_flight.inserted.result()
            while not in_flight.deliveries.done:
                if self._giving_up():
                    raise WorkerError("Kafka did not take the flush's quarantine and error "
                                      "messages before the stop's grace period ended")
                assert self._errors is not None
                self._errors.poll(0.1)  # the quarantine producer polls on its own thread
        except BaseException:
            self._failed = True
            self._in_flight = None
            raise
        self._in_flight = None
        if in_flight.deliveries.failed:
            logger.error("%d quarantine or error messages were refused by Kafka for good; "
                         "their rows are in ClickHouse, their originals only in their topics",
                         in_flight.deliveries.failed)
        for key, offset in in_flight.offsets.items():
            self._to_commit[key] = max(offset, self._to_commit.get(key, 0))
        for partition, offset in in_flight.ingest_offsets.items():
            self._ingest_to_commit[partition] = max(
                offset, self._ingest_to_commit.get(partition, 0))
        self._next_commit_s = 0.0
        self._commit()

    def _commit(self) -> None:
        """Commit offsets whose rows are stored; a refused commit is tried again later.

        Offsets of partitions this worker no longer owns are dropped: their next owner
        reads those records again, and their rows collapse with ours under FINAL.
        """
        if self._failed or not (self._to_commit or self._ingest_to_commit):
            return
        now = time.monotonic()
        if now < self._next_commit_s or self._consumer is None:
            return
        try:
            owned = {k: o for k, o in self._to_commit.items() if k in self._assigned}
            if owned:
                self._consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o
                                               in owned.items()], asynchronous=False)
                self.metrics.commits.inc()
            self._to_commit.clear()
            if self._ingest is not None and self._ingest_to_commit:
                self._ingest.commit(self._ingest_to_commit)
            self._ingest_to_commit.clear()
        except KafkaException as e:
            self._throttle.warn("commit", "committing offsets failed (%s); the rows are "
                                "stored, the commit is tried again", e)
            self._next_commit_s = now + self._commit_delay_s
            self._commit_delay_s = min(self._commit_delay_s * 2, self._options.sink_backoff_max_s)
            return
        self._commit_delay_s = 0.2

    def _resolve_join(self) -> None:
        """Look up the turns of waiting feedback in the warehouse (bounded, see `join_state`).

        New waiting feedback is looked up at once; all of it every `join_lookup_interval_s`.
        A failed lookup is tried at a later flush: nothing expires meanwhile.
        """
        join = self.processor.join
        assert self._sink is not None
        now = time.monotonic()
        full = now - self._last_full_lookup_s >= self._options.join_lookup_interval_s
        wanted = ({p.event.event_id for p in join.pending} if full else set(join.unlooked))
        turn_ids = sorted({str(p.event.turn_event_id) for p in join.pending
                           if p.event.event_id in wanted})
        if turn_ids:
            if self._sink.unreachable:
                return
            try:
                turns, rejected = lookup_turns(self._client,
                                               database=self._settings.clickhouse.database,
                                               ids=turn_ids,
                                               chunk_ids=self._options.join_lookup_chunk_ids)
            except Exception as e:  # an outage: the feedback keeps waiting
                self._throttle.warn("lookup", "looking up the turns of %d waiting feedback "
                                    "events failed (%s); tried again at a later flush",
                                    len(turn_ids), e)
                return
            join.unlooked -= wanted
            if full:
                self._last_full_lookup_s = now
            rows = join.resolve(turns, rejected)
            if rows:
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

    def _retrying(self, step: Any, what: str) -> Any:
        return retrying(step, what=what, give_up=self._giving_up,
                        backoff_max_s=self._options.sink_backoff_max_s, throttle=self._throttle)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned = {(tp.topic, tp.partition) for tp in partitions}
        self._resume(consumer, partitions)
        # Rows read from partitions lost in an outage may still be buffered: they land
        # (and commit, where they came back to us) before the ledger is read, so the
        # replay of those records follows their logged outcome.
        self._flush_and_commit()
        committed = self._retrying(lambda: consumer.committed(partitions, timeout=10),
                                   "reading the committed offsets")
        self._logged.update(self._retrying(lambda: logged_outcomes(
            self._client, database=self._settings.clickhouse.database,
            starts={(tp.topic, tp.partition): max(tp.offset, 0) for tp in committed}),
            "reading the ledger"))
        feedback_topic = self._topics[1]
        self.processor.join.restore(self._retrying(lambda: load_pending(
            self._client, database=self._settings.clickhouse.database, topic=feedback_topic,
            partitions=[tp.partition for tp in committed if tp.topic == feedback_topic],
            ttl_s=self._options.join_ttl_s, limit=self._options.join_max_pending),
            "reading the waiting feedback"))
        self._ready.set(1)
        logger.info("assigned %s", [(tp.topic, tp.partition, tp.offset) for tp in committed])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Our uncommitted offsets of these partitions must land and commit before another
        # worker starts on them.
        self._ready.set(0)
        self._flush_and_commit()
        self._forget(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The group moved on without us (the broker was away longer than the session
        # timeout): committing is refused now. The rows read from these partitions still
        # land; their next owner, perhaps us again, reads the records again from the
        # committed offsets and the ledger tells it what became of them.
        self._ready.set(0)
        logger.warning("lost partitions %s (the broker was unreachable for longer than "
                       "streams.session_timeout_ms); rejoining the group",
                       [(tp.topic, tp.partition) for tp in partitions])
        self._forget(partitions)

    def _resume(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Clear a pause of these partitions: librdkafka keeps it across a reassignment,
        and a partition paused before it was lost came back paused, never to be read."""
        try:
            consumer.resume(partitions + self._paused)
        except KafkaException as e:
            logger.warning("resuming %d partitions failed: %s", len(partitions), e)
        self._paused = []
        self._paused_gauge.set(0)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        if self._consumer is not None:
            self._resume(self._consumer, partitions)
        for tp in partitions:
            self._assigned.discard((tp.topic, tp.partition))
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
