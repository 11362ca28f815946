"""`flywheel inference controller`: deploys every `ModelPublished` of the served model.

Reads the compacted models-published topic from the start (so a restarted controller
catches up to the latest version), checks the published adapter against the repository
(copying it in from `adapter_uri` when the trainer wrote it elsewhere), and swaps.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from confluent_kafka import Consumer, KafkaError

from deploy.settings import FlywheelSettings
from inference.errors import InferenceError, SwapError
from inference.events import AlertProducer
from inference.repository import adapter_sha256, read_metadata, versions, write_version
from inference.routing import read_routing
from inference.swap import SwapController, SwapResult
from schemas import Alert, ModelPublished
from schemas.envelope import decode
from schemas.errors import FlywheelError
from streams.topics import MODELS_PUBLISHED

logger = logging.getLogger(__name__)


def stage_version(controller: SwapController, event: ModelPublished) -> None:
    """Make sure the published version is in the repository with the published hash.

    Raises:
        SwapError: the adapter is missing or its hash differs from the event's.
    """
    repo, model = controller.repo, controller.model
    if event.version not in versions(repo, model):
        source = Path(event.adapter_uri)
        if not source.is_dir():
            raise SwapError(
                f"version {event.version} is not in {repo / model} and adapter_uri "
                f"{event.adapter_uri} is not a local folder; write it with "
                "inference.repository.write_version"
            )
        actual = adapter_sha256(source)
        if actual != event.adapter_sha256:
            raise SwapError(f"adapter at {source} has sha256 {actual}, the event says "
                            f"{event.adapter_sha256}; republish it")
        write_version(repo, model, event.version, adapter_dir=source, metadata={
            "base_model": event.base_model, "adapter_id": event.adapter_id,
            "adapter_sha256": event.adapter_sha256, "published_at": str(event.published_at),
        })
    meta = read_metadata(repo, model, event.version)
    if meta.get("adapter_sha256") not in (None, event.adapter_sha256):
        raise SwapError(f"version {event.version} in the repository has adapter_sha256 "
                        f"{meta.get('adapter_sha256')}, the event says {event.adapter_sha256}")


def handle_published(controller: SwapController, event: ModelPublished) -> SwapResult | None:
    """Deploy one published version; a failure is alerted and logged, never raised."""
    if event.model != controller.model:
        return None
    routing = read_routing(controller.repo, controller.model)
    if routing is not None and routing.live == event.version:
        return None
    try:
        stage_version(controller, event)
    except (SwapError, FlywheelError) as e:
        try:
            live = routing.live if routing else 1
            controller.reject(event.version, live, str(e), "publish")
        except SwapError:
            pass
        return None
    try:
        return controller.deploy(event.version, reason="publish")
    except InferenceError as e:
        logger.error("publish of %s v%s not deployed: %s", event.model, event.version, e)
        return None


def run_controller(
    settings: FlywheelSettings, *, stop: threading.Event, model: str | None = None,
    repo: Path | None = None, topic: str = MODELS_PUBLISHED.name,
    alerts_topic: str | None = None, poll_s: float = 0.5,
) -> None:
    """Consume ModelPublished until `stop` is set.

    Raises:
        TritonUnavailableError: Triton is unreachable at start.
    """
    alerts = AlertProducer(settings.kafka, producer_name="flywheel-inference-controller",
                           topic=alerts_topic)

    def send_alert(alert: Alert) -> None:
        alerts.publish(alert, timeout_s=10)

    controller = SwapController(settings, model=model, repo=repo, alert_sink=send_alert)
    controller.start()
    consumer = Consumer({
        **settings.kafka.client_config(),
        "group.id": f"{settings.inference.controller_group_id}-{controller.model}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    logger.info("controller of %s consuming %s", controller.model, topic)
    try:
        while not stop.is_set():
            message = consumer.poll(poll_s)
            if message is None:
                continue
            if message.error():
                if message.error().code() != KafkaError._PARTITION_EOF:
                    logger.warning("Kafka error on %s: %s", topic, message.error())
                continue
            try:
                event = decode(message.value(), expect=ModelPublished).payload
            except FlywheelError as e:
                logger.error("skipping a bad record at %s offset %s: %s", topic,
                             message.offset(), e)
            else:
                handle_published(controller, event)
            consumer.commit(message=message, asynchronous=False)
    finally:
        consumer.close()
        alerts.close()
