"""Kafka producers for the platform events the inference package sends.

`EventProducer.send_and_wait` reads `event.event_id`, which `ModelPublished` does not
have; `publish` sends and flushes instead (a failed delivery raises from flush). Alerts
are not sent from here: they go to Alertmanager (`monitoring.platform_alerts`), whose
receiver puts them on the alerts topic.
"""

from __future__ import annotations

from typing import TypeVar

from schemas import ModelPublished
from schemas.base import Contract
from streams.producer import EventProducer
from streams.topics import MODELS_PUBLISHED

EventT = TypeVar("EventT", bound=Contract)


class _Publisher(EventProducer[EventT]):
    def publish(self, event: EventT, *, timeout_s: float = 10.0) -> None:
        """Send one event and wait until the broker has it.

        Raises:
            DeliveryError: the broker did not take it within the timeout.
        """
        self.send(event)
        self.flush(timeout_s)


class ModelPublishedProducer(_Publisher[ModelPublished]):
    """Sends `ModelPublished` to its compacted topic, keyed by model name."""

    topic = MODELS_PUBLISHED.name
    event_type = ModelPublished

    def key_of(self, event: ModelPublished) -> bytes:
        return event.model.encode()
