"""End to end through the real Prometheus, Alertmanager, ClickHouse and Kafka: drifted
traffic fires a drift alert that reaches the receiver, the alerts table and the alerts
topic; when the drift stops, the alert resolves."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import Consumer

from deploy.settings import FlywheelSettings
from monitoring.alerts import AlertSink
from monitoring.receiver import build_receiver_app
from monitoring.runner import MonitorRunner
from tests.deploy.local.polling import wait_for
from tests.monitoring.conftest import ServerThread
from tests.monitoring.traffic import (
    ACCOUNT,
    MODEL_VERSION_COLUMNS,
    SPORTS,
    TURN_COLUMNS,
    sentences,
    serving_version,
    user_turns,
)


def alert_rows(client: Any, name: str, status: str) -> list[tuple[Any, ...]]:
    return list(client.query(
        "SELECT name, status, severity, summary, runbook_url, labels FROM alerts "
        "WHERE name = {n:String} AND status = {s:String}",
        parameters={"n": name, "s": status}).result_rows)


def diagnosis(settings: FlywheelSettings) -> str:
    """What Prometheus and Alertmanager see, for a failure message."""
    import httpx

    parts = []
    for url in (f"{settings.prometheus.http_url}/api/v1/targets",
                f"{settings.prometheus.http_url}/api/v1/alerts",
                f"{settings.alertmanager.http_url}/api/v2/alerts",
                f"{settings.alertmanager.http_url}/api/v2/status"):
        try:
            parts.append(f"{url}: {httpx.get(url, timeout=5).text[:3000]}")
        except httpx.HTTPError as e:
            parts.append(f"{url}: {e}")
    return "\n".join(parts)


def topic_alert_names(settings: FlywheelSettings, topic: str) -> list[str]:
    consumer = Consumer({**settings.kafka.client_config(), "group.id": f"{topic}-reader",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    names: list[str] = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                if names:
                    break
                continue
            if message.error() is None:
                names.append(json.loads(message.value())["payload"]["name"])
    finally:
        consumer.close()
    return names


@pytest.mark.integration
@pytest.mark.slow
def test_drifted_traffic_fires_a_drift_alert_that_reaches_the_receiver_and_resolves(
    wired_stack: Callable[..., Any], warehouse: Any, monitoring_settings: FlywheelSettings,
    alerts_topic: str,
) -> None:
    now = datetime.now(UTC)
    model = monitoring_settings.model.name
    trained_from, trained_to = now - timedelta(hours=3), now - timedelta(hours=2)
    warehouse.insert("model_versions", [serving_version(model, version=4, start=trained_from,
                                                         end=trained_to)],
                     column_names=MODEL_VERSION_COLUMNS)
    warehouse.insert("chat_turns", user_turns(sentences(ACCOUNT, 150, seed=1), topic="account",
                                              start=trained_from, end=trained_to),
                     column_names=TURN_COLUMNS)
    warehouse.insert("chat_turns", user_turns(sentences(SPORTS, 150, seed=2), topic="sports",
                                              start=now - timedelta(minutes=5), end=now),
                     column_names=TURN_COLUMNS)

    monitoring = monitoring_settings.monitoring
    sink = AlertSink(monitoring_settings, topic=alerts_topic)
    receiver = ServerThread(build_receiver_app(sink), host=monitoring.receiver_host,
                            port=monitoring.receiver_port)
    runner = MonitorRunner(monitoring_settings)
    stop = threading.Event()
    loop = threading.Thread(target=runner.run, kwargs={"stop": stop}, daemon=True)
    receiver.start()
    runner.serve_metrics()
    loop.start()
    try:
        assert wait_for(lambda: bool(alert_rows(warehouse, "FlywheelEmbeddingDrift", "firing")),
                        timeout_s=240), diagnosis(monitoring_settings)
        [(_, _, severity, summary, runbook_url, labels)] = alert_rows(
            warehouse, "FlywheelEmbeddingDrift", "firing")[:1]
        assert severity == "warning"
        assert "drifted from the training data" in summary
        assert runbook_url == "docs/runbooks/FlywheelEmbeddingDrift.md"
        assert labels["detector"] == "embedding_mmd"
        assert "FlywheelEmbeddingDrift" in topic_alert_names(monitoring_settings, alerts_topic)

        evaluations = warehouse.query(
            "SELECT status, reference_source FROM drift_evaluations "
            "WHERE detector = 'embedding_mmd' AND tenant = 'all' LIMIT 1").result_rows
        assert evaluations == [("drift", "serving_version:4")]

        # The drift stops: the current window looks like the training data again.
        warehouse.command("ALTER TABLE chat_turns DELETE WHERE topic = 'sports' "
                          "SETTINGS mutations_sync = 2")
        now = datetime.now(UTC)
        warehouse.insert("chat_turns", user_turns(sentences(ACCOUNT, 150, seed=3),
                                                  topic="account",
                                                  start=now - timedelta(minutes=5), end=now),
                         column_names=TURN_COLUMNS)
        assert wait_for(
            lambda: bool(alert_rows(warehouse, "FlywheelEmbeddingDrift", "resolved")),
            timeout_s=240), diagnosis(monitoring_settings)
    finally:
        stop.set()
        loop.join(60)
        runner.close()
        receiver.stop()
        sink.close()


@pytest.mark.integration
def test_webhook_calls_arriving_together_are_all_stored(
    warehouse: Any, monitoring_settings: FlywheelSettings, alerts_topic: str,
) -> None:
    # Alertmanager posts each alert group on its own connection; the receiver writes them
    # from worker threads through one sink.
    import httpx

    from tests.monitoring.test_alerts_and_actions import webhook

    monitoring = monitoring_settings.monitoring
    sink = AlertSink(monitoring_settings, topic=alerts_topic)
    receiver = ServerThread(build_receiver_app(sink), host=monitoring.receiver_host,
                            port=monitoring.receiver_port)
    url = f"http://{monitoring.receiver_host}:{monitoring.receiver_port}/alerts"
    names = [f"FlywheelConcurrent{i}" for i in range(12)]
    statuses: list[int] = []
    receiver.start()
    try:
        def post(name: str) -> None:
            body = webhook("firing", name=name)
            body["alerts"][0]["fingerprint"] = name  # one alert each, not one alert resent
            statuses.append(httpx.post(url, json=body, timeout=30).status_code)

        threads = [threading.Thread(target=post, args=(name,)) for name in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        receiver.stop()
        sink.close()

    assert statuses == [200] * len(names)
    stored = {row[0] for row in warehouse.query(
        "SELECT name FROM alerts WHERE name LIKE 'FlywheelConcurrent%'").result_rows}
    assert stored == set(names)
