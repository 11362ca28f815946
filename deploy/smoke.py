"""A smoke run over the local stack: each real service answers a real request.

This is what `flywheel demo` runs until the full continuous-learning loop lands: it
brings the stack up, applies the warehouse migrations, creates the topics, and then asks
each service something only a working instance can answer.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from deploy.settings import FlywheelSettings


@dataclass(frozen=True)
class Check:
    """The result of one smoke check."""

    service: str
    what: str
    ok: bool
    answer: str
    elapsed_ms: float


def _timed(service: str, what: str, probe: Callable[[], str]) -> Check:
    started = time.perf_counter()
    try:
        answer, ok = probe(), True
    except Exception as e:  # a smoke run reports every failure instead of stopping
        answer, ok = f"{type(e).__name__}: {e}", False
    return Check(service, what, ok, answer, (time.perf_counter() - started) * 1000)


def kafka_round_trip(settings: FlywheelSettings) -> str:
    from confluent_kafka import Consumer, TopicPartition

    from schemas import ChatEvent, Role, decode
    from streams.producer import ChatEventProducer

    event = ChatEvent(conversation_id=f"smoke-{uuid.uuid4().hex[:8]}", turn_index=0,
                      role=Role.USER, text="Hello, Flywheel!", tenant="smoke")
    with ChatEventProducer(settings.kafka, producer_name="flywheel-smoke") as producer:
        report = producer.send_and_wait(event)
    consumer = Consumer({**settings.kafka.client_config(), "group.id": "flywheel-smoke",
                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(report.topic, report.partition, report.offset)])
        message = consumer.poll(10)
        if message is None or message.error():
            raise RuntimeError(f"could not read back offset {report.offset}")
        back: object = decode(message.value() or b"").payload
    finally:
        consumer.close()
    if back != event:
        raise RuntimeError("the event read back differs from the one sent")
    where = f"{report.topic}[{report.partition}]@{report.offset}"
    return f"ChatEvent {str(event.event_id)[:8]} -> {where} and back"


def clickhouse_query(settings: FlywheelSettings) -> str:
    from deploy.clickhouse.client import get_client

    client = get_client(settings)
    try:
        version = client.query("SELECT version()").result_rows[0][0]
        tables = client.query(
            "SELECT count() FROM system.tables WHERE database = {db:String}",
            parameters={"db": settings.clickhouse.database},
        ).result_rows[0][0]
    finally:
        client.close()
    return f"ClickHouse {version}, {tables} tables and views in {settings.clickhouse.database}"


def triton_metadata(settings: FlywheelSettings) -> str:
    import tritonclient.http as triton_http

    client = triton_http.InferenceServerClient(settings.triton.http_address)
    try:
        metadata = client.get_server_metadata()
        ready = client.is_server_ready()
    finally:
        client.close()
    return f"Triton {metadata['version']}, ready={ready}"


def prometheus_targets(settings: FlywheelSettings) -> str:
    response = httpx.get(f"{settings.prometheus.http_url}/api/v1/targets", timeout=5)
    response.raise_for_status()
    targets = response.json()["data"]["activeTargets"]
    up = sum(1 for t in targets if t["health"] == "up")
    return f"{len(targets)} scrape targets, {up} up"


def alertmanager_status(settings: FlywheelSettings) -> str:
    response = httpx.get(f"{settings.alertmanager.http_url}/api/v2/status", timeout=5)
    response.raise_for_status()
    status = response.json()
    return f"Alertmanager {status['versionInfo']['version']}, cluster {status['cluster']['status']}"


def run_smoke(settings: FlywheelSettings) -> list[Check]:
    """Ask every service of the (already running) stack a real question."""
    return [
        _timed("kafka", "produce a ChatEvent with the SDK, read it back",
               lambda: kafka_round_trip(settings)),
        _timed("clickhouse", "query over the HTTP interface", lambda: clickhouse_query(settings)),
        _timed("triton", "server metadata over HTTP", lambda: triton_metadata(settings)),
        _timed("prometheus", "list scrape targets", lambda: prometheus_targets(settings)),
        _timed("alertmanager", "read status", lambda: alertmanager_status(settings)),
    ]
