"""The producer SDK for product backends: chat events and feedback into Kafka, never dropped.

    from streams.producer import ChatEventProducer

    with ChatEventProducer(settings, producer_name="support-bot") as producer:
        producer.send(event)                       # queued; errors surface on flush/close
        report = producer.send_and_wait(event)     # blocks until the broker acknowledged
        report = await producer.send_async(event)  # the same from asyncio code

Behind it is one idempotent confluent-kafka producer (`acks=all`, no duplicates on retry)
that batches and compresses. When the local queue is full, `send` waits for room instead
of dropping; every delivery is reported, and a failed one raises `DeliveryError` from the
call that waits for it (`send_and_wait`, `send_async`, `flush` or `close`).

Delivery reports are served by the thread that calls `send` (every few calls, without
blocking) and, while nobody sends, by a background thread. Served only by the background
thread, they cost a GIL hand-off between the two threads per event, the largest part of
the SDK's overhead over a plain loop (BENCHMARKS.md, "Producer SDK and HTTP ingest").
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar
from uuid import UUID

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from schemas.base import Contract
from schemas.chat import ChatEvent
from schemas.envelope import encode, encoder
from schemas.feedback import FeedbackEvent
from streams.errors import DeliveryError, EnqueueTimeoutError, ProducerClosedError
from streams.topics import CHAT_EVENTS, FEEDBACK_EVENTS

if TYPE_CHECKING:
    from deploy.settings import KafkaSettings

logger = logging.getLogger(__name__)
_LIBRDKAFKA_LOGGER = logging.getLogger("librdkafka")

#: How long the background thread stands back after seeing a `send`: the sending thread
#: serves delivery reports itself meanwhile. Bounds the extra delay of a report for an
#: event queued just before the sending stopped.
_STAND_BACK_S = 0.01
#: The background thread's longest wait for a report, and so for `close` to join it:
#: librdkafka's poll cannot be woken. At 0.1 s, `close` after a `flush` took 47 ms (median
#: of 12); at 0.02 s it takes 6 ms, for 50 idle wake-ups a second.
_IDLE_POLL_S = 0.02
#: `send` serves delivery reports once per this many calls. A poll costs about as much as
#: queuing the event itself and mostly finds nothing: reports come back a batch at a time.
_POLL_EVERY_SENDS = 32

EventT = TypeVar("EventT", bound=Contract)


@dataclass(frozen=True)
class DeliveryReport:
    """Where the broker stored one event, or why it could not."""

    event_id: UUID | None
    """The event's `event_id`; None for kinds without one (e.g. `ModelPublished`)."""
    topic: str
    partition: int
    offset: int
    error: KafkaError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


DeliveryCallback = Callable[[DeliveryReport], None]


class _ThreadState(threading.local):
    in_callback = False
    """True while this thread runs a caller's `on_delivery`: librdkafka must not be
    polled again from inside a delivery callback (confluent-kafka keeps one call state
    per thread; a nested poll would clear the outer one)."""


class EventProducer(Generic[EventT]):
    """Sends one kind of event to its topic, keyed by conversation id."""

    topic: ClassVar[str]
    event_type: ClassVar[type[Contract]]

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        producer_name: str,
        topic: str | None = None,
        config_overrides: dict[str, Any] | None = None,
    ) -> None:
        self._settings = settings
        self._producer_name = producer_name
        self._topic = topic or self.topic
        self._overrides = dict(config_overrides or {})
        self._producer: Producer | None = None
        self._poller: threading.Thread | None = None
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._failures: list[DeliveryReport] = []
        self._failures_lock = threading.Lock()
        self._closed = False
        self._thread = _ThreadState()
        # Counts `send` calls; the background thread stands back while it keeps changing.
        self._sends = 0
        # One bound method for every event, not one per `send`.
        self._on_report = self._record_failure
        # Serialises this producer's events; built by the first one (an invalid producer
        # name raises from `send`, as with `encode`, not from the constructor).
        self._encode: Callable[[EventT], bytes] = self._first_encode

    # -- lifecycle -----------------------------------------------------------------------

    def _client(self) -> Producer:
        """The confluent-kafka producer, created on first use (never in the constructor)."""
        if self._closed:
            raise ProducerClosedError("this producer is closed; create a new one")
        if self._producer is None:
            with self._lock:
                if self._producer is None:
                    self._producer = Producer(self._config())
                    self._poller = threading.Thread(
                        target=self._poll_loop, name=f"flywheel-producer-{self._topic}",
                        daemon=True,
                    )
                    self._poller.start()
        return self._producer

    def _config(self) -> dict[str, Any]:
        options = self._settings.producer
        config = {
            **self._settings.client_config(),
            "client.id": self._producer_name,
            # librdkafka's own log lines go through Python logging, not straight to stderr.
            "logger": _LIBRDKAFKA_LOGGER,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": options.compression,
            "linger.ms": options.linger_ms,
            "batch.size": options.batch_size_bytes,
            "queue.buffering.max.messages": options.queue_max_messages,
            "delivery.timeout.ms": options.delivery_timeout_ms,
        }
        config.update(self._overrides)
        return config

    def _poll_loop(self) -> None:
        # Serves delivery reports while nobody calls `send`, e.g. for `send_and_wait`,
        # `send_async` and the last events before a pause. While `send` keeps being called,
        # its thread serves them and this one only sleeps: two threads polling would hand
        # the GIL back and forth once per report.
        producer = self._producer
        assert producer is not None
        seen = -1
        while not self._closing.is_set():
            sends = self._sends
            if sends != seen:
                seen = sends
                self._closing.wait(_STAND_BACK_S)
                continue
            producer.poll(_IDLE_POLL_S)

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every queued event is delivered or failed.

        Raises:
            DeliveryError: some events could not be delivered (listed in `.reports`), or
                events were still queued when the timeout passed.
        """
        if self._producer is not None:
            remaining = self._producer.flush(-1 if timeout_s is None else timeout_s)
            if remaining:
                raise DeliveryError(
                    f"{remaining} events still queued for {self._topic} after {timeout_s} s; "
                    "is Kafka reachable? (flywheel stack status)",
                    reports=[],
                )
        self._raise_failures()

    def close(self, timeout_s: float | None = None) -> None:
        """Flush, then release the client. Idempotent.

        Raises:
            DeliveryError: as `flush`.
        """
        if self._closed:
            return
        # Stop the background thread first: `flush` serves the remaining reports itself,
        # and the thread then ends during the flush instead of after it.
        self._closing.set()
        try:
            self.flush(timeout_s)
        finally:
            if self._poller is not None:
                self._poller.join()
            self._closed = True
            self._producer = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.close)

    # -- sending -------------------------------------------------------------------------

    def send(self, event: EventT, *, on_delivery: DeliveryCallback | None = None) -> None:
        """Queue one event; waits while the local queue is full, never drops it.

        `on_delivery` is called once the broker answered, from a background thread or from
        inside a later `send`, `flush` or `close` of this producer (it must not call
        `flush` or `close` itself). An exception it raises is logged, not propagated.
        Without it, a failed delivery is raised by the next `flush` or `close`.

        Raises:
            TypeError: the event is not of this producer's type.
            EnqueueTimeoutError: the queue stayed full for `kafka.producer.enqueue_timeout_s`.
        """
        if on_delivery is None and type(event) is self.event_type:
            # The hot path: what `_prepare` does, minus its checks and closure.
            self._produce(self.key_of(event), self._encode(event), self._on_report)
        else:
            self._produce(*self._prepare(event, on_delivery))
        self._sends = sends = self._sends + 1
        if not sends % _POLL_EVERY_SENDS:
            producer = self._producer
            if producer is not None and not self._thread.in_callback:
                # Serve the reports that arrived meanwhile here, without blocking: cheaper
                # than waking the background thread for each (see `_poll_loop`).
                producer.poll(0)

    def _prepare(
        self, event: EventT, on_delivery: DeliveryCallback | None
    ) -> tuple[bytes, bytes, Callable[[KafkaError | None, Message], None]]:
        """The key, value and librdkafka callback of one event."""
        if not isinstance(event, self.event_type):
            raise TypeError(
                f"{type(self).__name__} sends {self.event_type.__name__}, "
                f"not {type(event).__name__}"
            )
        if type(event) is self.event_type:
            value = self._encode(event)
        else:  # a subclass: `encode` refuses it with the reason
            value = encode(event, producer=self._producer_name)
        key = self.key_of(event)
        if on_delivery is None:
            return key, value, self._on_report
        event_id: UUID | None = getattr(event, "event_id", None)
        thread = self._thread

        def delivered(error: KafkaError | None, message: Message) -> None:
            thread.in_callback = True
            try:
                on_delivery(self._report(event_id, error, message))
            except Exception:
                # Raised from here, it would surface from an unrelated `send` or `flush`,
                # or end the background thread.
                logger.exception("on_delivery for event %s raised; ignored", event_id)
            finally:
                thread.in_callback = False

        return key, value, delivered

    def _first_encode(self, event: EventT) -> bytes:
        self._encode = encoder(self.event_type, producer=self._producer_name)  # type: ignore[arg-type]
        return self._encode(event)

    def _report(
        self, event_id: UUID | None, error: KafkaError | None, message: Message
    ) -> DeliveryReport:
        return DeliveryReport(
            event_id=event_id,
            topic=message.topic() or self._topic,
            partition=message.partition() or 0,
            offset=_offset_of(message) if error is None else -1,
            error=error,
        )

    def _record_failure(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            return
        # Failures are rare: recover the event id from the payload only then.
        payload = json.loads(message.value() or b"{}").get("payload", {})
        # A QuarantinedRecord carries `"event_id": null` when the original had none.
        event_id = UUID(payload["event_id"]) if payload.get("event_id") else None
        logger.warning("delivery of %s to %s failed: %s", event_id, self._topic, error)
        with self._failures_lock:
            self._failures.append(self._report(event_id, error, message))

    def key_of(self, event: EventT) -> bytes:
        """The Kafka key: the conversation id, so a conversation stays on one partition."""
        return str(event.conversation_id).encode()  # type: ignore[attr-defined]

    def _produce(
        self, key: bytes, value: bytes, callback: Callable[..., None], *, wait: bool = True
    ) -> bool:
        """Queue one message; False when the queue is full and `wait` is False."""
        producer = self._producer if self._producer is not None else self._client()
        deadline: float | None = None  # set on the first full queue, off the hot path
        while True:
            try:
                producer.produce(self._topic, value=value, key=key, on_delivery=callback)
                return True
            except BufferError:
                if not wait:
                    return False
                # Backpressure: the local queue is full; wait for deliveries to free room.
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self._settings.producer.enqueue_timeout_s
                elif now >= deadline:
                    raise EnqueueTimeoutError(
                        f"the local queue for {self._topic} stayed full for "
                        f"{self._settings.producer.enqueue_timeout_s} s; Kafka is slow or "
                        "unreachable. Raise kafka.producer.queue_max_messages or "
                        "kafka.producer.enqueue_timeout_s, or check `flywheel stack status`"
                    ) from None
                if self._thread.in_callback:
                    time.sleep(0.01)
                else:
                    producer.poll(0.01)  # delivery reports free room in the queue
            except KafkaException as e:
                raise DeliveryError(f"could not queue an event for {self._topic}: {e}",
                                    reports=[]) from e

    def send_and_wait(self, event: EventT, *, timeout_s: float | None = None) -> DeliveryReport:
        """Send one event and block until the broker acknowledged it.

        Raises:
            DeliveryError: the broker did not take it (with the Kafka error and its code).
        """
        done = threading.Event()
        result: list[DeliveryReport] = []

        def on_delivery(report: DeliveryReport) -> None:
            result.append(report)
            done.set()

        # Not `send`: the background thread must serve this report at once, not stand back.
        self._produce(*self._prepare(event, on_delivery))
        limit_s = timeout_s or self._settings.producer.delivery_timeout_ms / 1000 + 5
        if not done.wait(limit_s):
            raise DeliveryError(
                f"no delivery report for {self._topic} within {limit_s} s", reports=[]
            )
        return _checked(result[0])

    async def send_async(self, event: EventT) -> DeliveryReport:
        """Send one event from asyncio code and await the broker's acknowledgement.

        Raises:
            DeliveryError: the broker did not take it.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[DeliveryReport] = loop.create_future()

        def on_delivery(report: DeliveryReport) -> None:
            loop.call_soon_threadsafe(_resolve, future, report)

        # Not `send`: the background thread must serve this report at once, not stand back.
        # Queued from the event loop when there is room (no thread hop per event); waiting
        # for room happens in a worker thread, off the loop.
        prepared = self._prepare(event, on_delivery)
        if not self._produce(*prepared, wait=False):
            await asyncio.to_thread(self._produce, *prepared)
        return _checked(await future)

    def _raise_failures(self) -> None:
        with self._failures_lock:
            failures, self._failures = self._failures, []
        if failures:
            first = failures[0].error
            raise DeliveryError(
                f"{len(failures)} events could not be delivered to {self._topic}: {first}",
                reports=failures,
            )


def _offset_of(message: Message) -> int:
    offset = message.offset()
    return -1 if offset is None else offset


def _resolve(future: asyncio.Future[DeliveryReport], report: DeliveryReport) -> None:
    if not future.done():
        future.set_result(report)


def _checked(report: DeliveryReport) -> DeliveryReport:
    if report.error is not None:
        raise DeliveryError(
            f"event {report.event_id} was not delivered to {report.topic}: {report.error}",
            reports=[report],
        )
    return report


class ChatEventProducer(EventProducer[ChatEvent]):
    """Sends `ChatEvent`s to the chat events topic."""

    topic = CHAT_EVENTS.name
    event_type = ChatEvent


class FeedbackProducer(EventProducer[FeedbackEvent]):
    """Sends `FeedbackEvent`s to the feedback topic."""

    topic = FEEDBACK_EVENTS.name
    event_type = FeedbackEvent
