"""`flywheel status` and `flywheel alerts list | silence` against the real services."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings
from monitoring.alertmanager import AlertmanagerClient
from monitoring.status import gather_status
from tests.deploy.local.polling import wait_for
from tests.monitoring.traffic import MODEL_VERSION_COLUMNS, serving_version


def post_alert(settings: FlywheelSettings, name: str) -> None:
    now = datetime.now(UTC)
    alert = {"labels": {"alertname": name, "severity": "critical", "model": "m"},
             "annotations": {"summary": f"{name} posted by a test"},
             "startsAt": now.isoformat(), "endsAt": (now + timedelta(minutes=5)).isoformat()}
    httpx.post(f"{settings.alertmanager.http_url}/api/v2/alerts", json=[alert],
               timeout=5).raise_for_status()


@pytest.mark.integration
def test_a_silenced_alert_leaves_the_list_until_silenced_ones_are_asked_for(
    running: Callable[..., Supervisor], settings: FlywheelSettings, unique_name: str
) -> None:
    running("alertmanager")
    client = AlertmanagerClient(settings.alertmanager.http_url)
    post_alert(settings, unique_name)
    assert wait_for(lambda: any(a.name == unique_name for a in client.alerts()), timeout_s=10)
    [listed] = [a for a in client.alerts() if a.name == unique_name]
    assert listed.severity == "critical" and listed.summary.endswith("posted by a test")

    silence_id = client.silence({"alertname": unique_name}, duration_s=600,
                                created_by="test", comment="testing silences")
    try:
        assert wait_for(lambda: all(a.name != unique_name for a in client.alerts()),
                        timeout_s=10)
        assert any(a.name == unique_name for a in client.alerts(include_silenced=True))
    finally:
        client.expire_silence(silence_id)


@pytest.mark.integration
def test_status_shows_services_the_served_version_and_firing_alerts(
    running: Callable[..., Supervisor], warehouse: Any, monitoring_settings: FlywheelSettings,
    unique_name: str,
) -> None:
    running("clickhouse", "kafka", "alertmanager")
    now = datetime.now(UTC)
    warehouse.insert("model_versions", [serving_version(monitoring_settings.model.name,
                                                        version=7, start=now - timedelta(hours=2),
                                                        end=now - timedelta(hours=1))],
                     column_names=MODEL_VERSION_COLUMNS)
    post_alert(monitoring_settings, unique_name)

    status = gather_status(monitoring_settings)

    services = {s.name: s for s in status.services}
    assert services["clickhouse"].healthy and services["kafka"].healthy
    assert status.serving is not None and status.serving["version"] == 7
    assert status.last_training is not None and status.last_training["version"] == 7
    assert status.last_evaluation is None
    assert any(a.name == unique_name for a in status.alerts)
    assert not [p for p in status.problems if "model versions" in p]
