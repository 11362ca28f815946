"""The local Prometheus and Alertmanager: rules loaded, Triton scraped, alerts accepted."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.local.prometheus import AlertmanagerService, PrometheusService
from deploy.local.prometheus_config import rules_dir
from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings
from tests.conftest import make_test_settings
from tests.deploy.local.polling import wait_for

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def monitoring(running: Callable[..., Supervisor]) -> Supervisor:
    return running("triton", "prometheus", "alertmanager")


def prometheus_api(settings: FlywheelSettings, path: str, **params: str) -> Any:
    response = httpx.get(f"{settings.prometheus.http_url}/api/v1/{path}", params=params, timeout=5)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]


@pytest.mark.integration
def test_prometheus_is_ready_and_has_loaded_the_stack_alert_rule(
    monitoring: Supervisor, settings: FlywheelSettings
) -> None:
    assert monitoring.get("prometheus").check_health().healthy

    groups = prometheus_api(settings, "rules", type="alert")["groups"]

    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert "FlywheelScrapeTargetDown" in rules
    assert rules["FlywheelScrapeTargetDown"]["labels"]["severity"] == "warning"
    assert rules["FlywheelScrapeTargetDown"]["health"] != "err"


@pytest.mark.integration
def test_prometheus_scrapes_triton_and_sees_it_up(
    monitoring: Supervisor, settings: FlywheelSettings
) -> None:
    def triton_is_a_target() -> bool:
        targets = prometheus_api(settings, "targets")["activeTargets"]
        return any(
            t["labels"]["job"] == "triton" and t["scrapeUrl"] == settings.triton.metrics_address
            for t in targets
        )

    # Target discovery runs a few seconds after Prometheus reports ready.
    assert wait_for(triton_is_a_target, timeout_s=30), prometheus_api(settings, "targets")

    def triton_is_up() -> bool:
        result = prometheus_api(settings, "query", query='up{job="triton"}')["result"]
        return bool(result) and result[0]["value"][1] == "1"

    assert wait_for(triton_is_up, timeout_s=60), prometheus_api(settings, "targets")


@pytest.mark.integration
def test_prometheus_sends_alerts_to_the_local_alertmanager(
    monitoring: Supervisor, settings: FlywheelSettings
) -> None:
    expected = f"{settings.alertmanager.http_url}/api/v2/alerts"

    def alertmanager_is_active() -> bool:
        active = prometheus_api(settings, "alertmanagers")["activeAlertmanagers"]
        return any(a["url"] == expected for a in active)

    assert wait_for(alertmanager_is_active, timeout_s=30)


@pytest.mark.integration
def test_alertmanager_is_ready_and_accepts_a_posted_alert(
    monitoring: Supervisor, settings: FlywheelSettings, unique_name: str
) -> None:
    assert monitoring.get("alertmanager").check_health().healthy
    now = datetime.now(UTC)
    alert = {
        "labels": {"alertname": unique_name, "severity": "warning", "job": "test"},
        "annotations": {"summary": "posted by a test"},
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(minutes=5)).isoformat(),
    }
    api = f"{settings.alertmanager.http_url}/api/v2/alerts"

    httpx.post(api, json=[alert], timeout=5).raise_for_status()

    def received() -> list[dict[str, Any]]:
        response = httpx.get(api, params={"filter": f'alertname="{unique_name}"'}, timeout=5)
        response.raise_for_status()
        alerts: list[dict[str, Any]] = response.json()
        return alerts

    assert wait_for(lambda: bool(received()), timeout_s=10)
    [got] = received()
    assert got["labels"]["severity"] == "warning"
    assert got["status"]["state"] == "active"


def test_rendered_configs_pass_promtool_and_amtool_checks(tmp_path: Path) -> None:
    webhook = FlywheelSettings().alertmanager.model_copy(
        update={"webhook_url": "http://127.0.0.1:9400/alerts"}
    )
    settings = make_test_settings(tmp_path, alertmanager=webhook)
    prometheus, alertmanager = PrometheusService(settings), AlertmanagerService(settings)
    prometheus.prepare()
    alertmanager.prepare()

    checks = [
        [require("promtool"), "check", "config", str(prometheus.config_path)],
        [require("amtool"), "check-config", str(alertmanager.config_path)],
    ]
    for argv in checks:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_alert_rules_pass() -> None:
    rule_tests = sorted((rules_dir() / "tests").glob("*.yml"))
    assert rule_tests, f"no promtool tests under {rules_dir() / 'tests'}"

    result = subprocess.run(
        [require("promtool"), "test", "rules", *map(str, rule_tests)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def require(tool: str) -> str:
    path = shutil.which(tool)
    assert path, f"{tool} is missing: apt-get install prometheus prometheus-alertmanager"
    return path
