"""What the stream worker needs to ride out Kafka and ClickHouse outages without exiting.

- `Deliveries`: the messages one flush sent to the quarantine and errors topics, still on
  their way. A flush's offsets are committed only once its rows are inserted *and* these
  are delivered, so an outage can delay a commit but never skip a message.
- `retrying`: run one step (read the committed offsets, the ledger, the waiting feedback)
  again with backoff until it works or the worker gives up.
- `Throttle`: one warning per kind of trouble per interval, not one per poll.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import KafkaError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: librdkafka's per-message delivery timeout for the worker's producers: a day, so that a
#: broker outage delays delivery instead of failing it (`_MSG_TIMED_OUT` after 30 s lost
#: the quarantine copy of a record whose offset was then committed).
DELIVERY_TIMEOUT_MS = 86_400_000


class Deliveries:
    """Messages of one flush still on their way to Kafka (delivery callbacks count down)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outstanding = 0
        #: Deliveries Kafka refused for good (not an outage: too large, no such topic).
        self.failed = 0

    @property
    def done(self) -> bool:
        return self._outstanding == 0

    def sent(self) -> None:
        with self._lock:
            self._outstanding += 1

    def delivered(self, ok: bool) -> None:
        with self._lock:
            self._outstanding -= 1
            if not ok:
                self.failed += 1

    def on_kafka_report(self, error: KafkaError | None, _message: object) -> None:
        """A confluent-kafka `on_delivery` callback."""
        self.delivered(error is None)


class Throttle:
    """Logs one warning per key per `interval_s`; the rest are counted and summed up."""

    def __init__(self, interval_s: float = 30.0) -> None:
        self._interval_s = interval_s
        self._last: dict[str, tuple[float, int]] = {}

    def warn(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last, skipped = self._last.get(key, (float("-inf"), 0))
        if now - last < self._interval_s:
            self._last[key] = (last, skipped + 1)
            return
        suffix = f" ({skipped} more like it since the last)" if skipped else ""
        logger.warning(message + suffix, *args)
        self._last[key] = (now, 0)


def retrying(step: Callable[[], T], *, what: str, give_up: Callable[[], bool],
             backoff_max_s: float, throttle: Throttle) -> T:
    """`step()`, tried again with backoff until it returns.

    Raises:
        the step's last error: `give_up()` said to stop trying.
    """
    delay_s = 0.2
    while True:
        try:
            return step()
        except Exception as e:  # Kafka's and ClickHouse's errors alike: an outage
            if give_up():
                raise
            throttle.warn(what, "%s failed (%s: %s); trying again", what, type(e).__name__, e)
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, backoff_max_s)
