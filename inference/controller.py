"""`flywheel inference controller`: deploys every `ModelPublished` of the served model.

Reads the compacted models-published topic from the start (so a restarted controller
catches up to the latest version), checks the published adapter against the repository
(copying it in from `adapter_uri` when the trainer wrote it elsewhere), and swaps; or,
with `inference.canary_share` above 0, runs the version as a canary first and promotes
or drops it on its live figures (`inference.canary`).

Beside the consumer a `ServingWatchdog` (`inference.watchdog`) loads the live version
again whenever Triton has lost it (a Triton restart), so serving comes back without a
command. Every alert the controller raises goes to Alertmanager
(`monitoring.platform_alerts`), from where the receiver stores it.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError

from deploy.settings import FlywheelSettings
from inference.canary import ArmStats, GatewayStats, Thresholds, Verdict, judge
from inference.errors import CanaryError, InferenceError, SwapError, TritonUnavailableError
from inference.repository import adapter_sha256, read_metadata, versions, write_version
from inference.routing import Routing, read_routing
from inference.swap import SwapController, SwapResult
from inference.watchdog import ServingWatchdog
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


def canary_thresholds(settings: FlywheelSettings) -> Thresholds:
    inference = settings.inference
    return Thresholds(
        min_requests=inference.canary_min_requests, window_s=inference.canary_window_s,
        max_p99_ratio=inference.canary_max_p99_ratio,
        max_error_rate=inference.canary_max_error_rate,
        max_negative_feedback_rate=inference.canary_max_negative_feedback_rate,
    )


def gateway_metrics_urls(settings: FlywheelSettings) -> list[str]:
    """The gateway of these settings; more replicas would each be listed."""
    inference = settings.inference
    return [f"http://{inference.gateway_host}:{inference.gateway_port}/metrics"]


def run_canary(
    controller: SwapController, version: int, *, stats: GatewayStats,
    stop: threading.Event | None = None, poll_s: float = 2.0,
) -> Verdict:
    """Run `version` as a canary until it is judged, then promote or drop it.

    A stop request, or gateway metrics that cannot be read, drops the canary: a version
    is never promoted without evidence.

    Raises:
        SwapError: the canary could not be started (an alert was sent).
        TritonUnavailableError: Triton cannot be reached.
    """
    settings = controller.settings
    limits = canary_thresholds(settings)
    live = (read_routing(controller.repo, controller.model) or Routing()).live
    try:
        before = stats.snapshot()
    except CanaryError as e:
        raise SwapError(f"canary of version {version} not started: {e}") from e
    controller.start_canary(version, share=settings.inference.canary_share)
    started = time.monotonic()
    verdict = Verdict("wait", "not judged yet")
    while verdict.decision == "wait":
        if stop is not None and stop.wait(poll_s):
            verdict = Verdict("rollback", "the controller is stopping")
            break
        if stop is None:
            time.sleep(poll_s)
        try:
            now = stats.snapshot()
        except CanaryError as e:
            verdict = Verdict("rollback", str(e))
            break
        empty = ArmStats()
        verdict = judge(now.get(str(live), empty).minus(before.get(str(live), empty)),
                        now.get(str(version), empty).minus(before.get(str(version), empty)),
                        elapsed_s=time.monotonic() - started, limits=limits)
    logger.info("canary %s v%s: %s (%s) %s", controller.model, version, verdict.decision,
                verdict.reason, verdict.figures)
    promote = verdict.decision == "promote"
    try:
        controller.end_canary(promote=promote, reason=verdict.reason)
    except SwapError as e:
        if not promote:
            raise
        logger.error("promoting canary %s v%s failed, dropping it: %s", controller.model,
                     version, e)
        controller.end_canary(promote=False, reason=f"promotion failed: {e}")
        return Verdict("rollback", f"promotion failed: {e}", verdict.figures)
    return verdict


def handle_published(
    controller: SwapController, event: ModelPublished, *, stats: GatewayStats | None = None,
    stop: threading.Event | None = None,
) -> SwapResult | None:
    """Deploy one published version; a failure is alerted and logged, never raised.

    With a canary share set and `stats` given, the version runs as a canary first. While
    Triton is unreachable or restarted without the model, the deploy waits and retries
    (the watchdog brings the live version back) for up to `inference.load_timeout_s`:
    an outage is no reason to refuse a version.
    """
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
    inference = controller.settings.inference
    deadline = time.monotonic() + inference.load_timeout_s
    while True:
        try:
            if stats is not None and inference.canary_share > 0:
                run_canary(controller, event.version, stats=stats, stop=stop)
                return None
            return controller.deploy(event.version, reason="publish")
        except TritonUnavailableError as e:
            if time.monotonic() > deadline or (stop is not None and stop.is_set()):
                logger.error("publish of %s v%s not deployed: Triton stayed unavailable "
                             "(%s); deploy it with `flywheel models promote %s`",
                             event.model, event.version, e, event.version)
                return None
            logger.warning("publish of %s v%s waits for Triton: %s", event.model,
                           event.version, e)
            wait_s = max(1.0, inference.serving_check_interval_s)
            if stop is not None:
                stop.wait(wait_s)
            else:
                time.sleep(wait_s)
        except InferenceError as e:
            logger.error("publish of %s v%s not deployed: %s", event.model, event.version, e)
            return None


def run_controller(
    settings: FlywheelSettings, *, stop: threading.Event, model: str | None = None,
    repo: Path | None = None, topic: str = MODELS_PUBLISHED.name,
    alerts_topic: str | None = None, poll_s: float = 0.5,
) -> None:
    """Consume ModelPublished until `stop` is set, keeping the live version served.

    `alerts_topic` is where alerts go when Alertmanager is unreachable (tests use their own).

    Raises:
        TritonUnavailableError: Triton is unreachable at start.
    """
    # The composition point: inference raises alerts, monitoring knows where they go.
    from monitoring.platform_alerts import PlatformAlerts

    alerts = PlatformAlerts(settings, producer_name="flywheel-inference-controller",
                            fallback_topic=alerts_topic)

    def send_alert(alert: Alert) -> None:
        alerts.send(alert)

    controller = SwapController(settings, model=model, repo=repo, alert_sink=send_alert)
    controller.start()
    watchdog_stop = threading.Event()
    watchdog = ServingWatchdog(controller).start(watchdog_stop)
    inference = settings.inference
    stats = None
    if inference.canary_share > 0:
        stats = GatewayStats(gateway_metrics_urls(settings), model=controller.model)
    consumer = Consumer({
        **settings.kafka.client_config(),
        "group.id": f"{inference.controller_group_id}-{controller.model}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        # A canary holds the loop for its window; the group must not drop the controller.
        "max.poll.interval.ms": int(1000 * max(
            300, 2 * inference.load_timeout_s + 3 * inference.canary_window_s)),
    })
    consumer.subscribe([topic])
    logger.info("controller of %s consuming %s", controller.model, topic)
    try:
        while not stop.is_set():
            message = consumer.poll(poll_s)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    logger.warning("Kafka error on %s: %s", topic, error)
                continue
            try:
                event = decode(message.value() or b"", expect=ModelPublished).payload
            except FlywheelError as e:
                logger.error("skipping a bad record at %s offset %s: %s", topic,
                             message.offset(), e)
            else:
                handle_published(controller, event, stats=stats, stop=stop)
            consumer.commit(message=message, asynchronous=False)
    finally:
        watchdog_stop.set()  # the watchdog ends with the consumer, whatever ended the loop
        consumer.close()
        watchdog.join(controller.settings.inference.load_timeout_s)
        alerts.close()
