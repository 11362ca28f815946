"""`flywheel status`: what on-call needs at a glance, each part gathered on its own.

A part that cannot be reached is reported as such (with what to run), never raised:
status must work exactly when things are broken.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from monitoring.alertmanager import ActiveAlert, AlertmanagerClient
from monitoring.errors import AlertmanagerError

if TYPE_CHECKING:
    from deploy.local.supervisor import ServiceStatus
    from deploy.settings import FlywheelSettings

logger = logging.getLogger(__name__)


@dataclass
class OnCallStatus:
    """Everything `flywheel status` shows; `problems` says what could not be read."""

    services: list[ServiceStatus] = field(default_factory=list)
    consumer_lag: dict[str, int] = field(default_factory=dict)
    """topic -> messages the stream workers' group has not consumed yet."""
    serving: dict[str, Any] | None = None
    """The version model_versions marks serving, with `state`: `serving` or `not serving`
    (Triton has no ready model, whatever the row says) and, when not, the `reason`."""
    last_training: dict[str, Any] | None = None
    last_evaluation: dict[str, Any] | None = None
    alerts: list[ActiveAlert] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def gather_status(settings: FlywheelSettings) -> OnCallStatus:
    """Collect every part of the status; failures become `problems`."""
    status = OnCallStatus()
    try:
        from deploy.local.stack import build_apps_supervisor, build_stack

        status.services = build_stack(settings).status()
        # Flywheel's own processes, where this host runs them (`flywheel apps up`).
        status.services += [
            row for row in build_apps_supervisor(settings).status() if row.running
        ]
    except Exception as e:  # noqa: BLE001 - status reports, it does not fail
        status.problems.append(f"stack status unavailable: {e}")
    try:
        status.consumer_lag = consumer_lag(settings, group=settings.streams.consumer_group)
    except Exception as e:  # noqa: BLE001
        status.problems.append(f"consumer lag unavailable (is Kafka up?): {e}")
    try:
        _warehouse_status(settings, status)
    except Exception as e:  # noqa: BLE001
        status.problems.append(f"model versions unavailable (is ClickHouse up and migrated?): {e}")
    _serving_state(settings, status)
    try:
        status.alerts = AlertmanagerClient(settings.alertmanager.http_url).alerts()
    except AlertmanagerError as e:
        status.problems.append(str(e))
    return status


def consumer_lag(settings: FlywheelSettings, *, group: str, timeout_s: float = 5.0
                 ) -> dict[str, int]:
    """Lag per topic of a consumer group: end offsets minus committed offsets.

    Raises:
        confluent_kafka.KafkaException: the broker is unreachable.
    """
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**settings.kafka.client_config(), "group.id": group,
                         "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(timeout=timeout_s)
        lag: dict[str, int] = {}
        for name, topic in metadata.topics.items():
            if name.startswith("__"):
                continue
            partitions = [TopicPartition(name, p) for p in topic.partitions]
            committed = consumer.committed(partitions, timeout=timeout_s)
            if all(tp.offset < 0 for tp in committed):
                continue  # the group never consumed this topic
            total = 0
            for tp in committed:
                _low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
                total += max(0, high - max(tp.offset, 0))
            lag[name] = total
        return lag
    finally:
        consumer.close()


def _warehouse_status(settings: FlywheelSettings, status: OnCallStatus) -> None:
    from deploy.clickhouse.client import get_client

    client = get_client(settings, readonly=True)
    try:
        model = {"model": settings.model.name}
        status.serving = _one(client, "SELECT version, adapter_id, published_at, updated_at "
                              "FROM model_versions FINAL WHERE model = {model:String} AND "
                              "status = 'serving' ORDER BY updated_at DESC LIMIT 1", model)
        status.last_training = _one(client, "SELECT version, status, window_start, window_end, "
                                    "train_rows, published_at FROM model_versions FINAL WHERE "
                                    "model = {model:String} ORDER BY published_at DESC LIMIT 1",
                                    model)
        status.last_evaluation = last_evaluation(client, settings.model.name)
    finally:
        client.close()


def _serving_state(settings: FlywheelSettings, status: OnCallStatus) -> None:
    """Ask Triton itself: a `serving` row only says which version should answer."""
    from inference.serving_status import check_serving

    live = int((status.serving or {}).get("version") or 0)
    health = check_serving(settings.triton.grpc_address, settings.model.name, live_version=live)
    state = {"state": "serving" if health.serving else "not serving"}
    if not health.serving:
        state["reason"] = health.reason
        status.problems.append(f"{settings.model.name} is not serving: {health.reason}")
    status.serving = {**state, **(status.serving or {})}


def last_evaluation(client: Any, model: str) -> dict[str, Any] | None:
    """The newest `evaluations` row of `model` (candidate_version, passed, reason,
    perplexity_new, perplexity_regression, evaluated_at), or None before the first."""
    return _one(client, "SELECT candidate_version, passed, reason, perplexity_new, "
                "perplexity_regression, evaluated_at FROM evaluations "
                "WHERE model = {model:String} ORDER BY evaluated_at DESC LIMIT 1",
                {"model": model})


def _one(client: Any, query: str, parameters: dict[str, Any]) -> dict[str, Any] | None:
    result = client.query(query, parameters=parameters)
    if not result.result_rows:
        return None
    return dict(zip(result.column_names, result.result_rows[0], strict=True))
