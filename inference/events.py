"""Kafka producers for the platform events the inference package sends."""

from __future__ import annotations

from schemas import Alert, ModelPublished
from streams.producer import EventProducer
from streams.topics import ALERTS, MODELS_PUBLISHED


class AlertProducer(EventProducer[Alert]):
    """Sends `Alert`s to the alerts topic, keyed by alert name."""

    topic = ALERTS.name
    event_type = Alert

    def key_of(self, event: Alert) -> bytes:
        return event.name.encode()


class ModelPublishedProducer(EventProducer[ModelPublished]):
    """Sends `ModelPublished` to its compacted topic, keyed by model name."""

    topic = MODELS_PUBLISHED.name
    event_type = ModelPublished

    def key_of(self, event: ModelPublished) -> bytes:
        return event.model.encode()
