"""Fixtures of the monitoring tests: a private database, the stack's Prometheus and
Alertmanager re-pointed at this session's monitor and receiver, and helpers that run them."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from deploy.local.prometheus import AlertmanagerService, PrometheusService
from deploy.local.prometheus_config import alertmanager_config, prometheus_config, write_config
from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings, MonitoringSettings
from streams.topics import ALERTS, ensure_topics
from tests.conftest import migrated_database

# The monitor's and receiver's ports: the defaults + the stack's port offset.
_MONITORING_DEFAULTS = MonitoringSettings()


@pytest.fixture
def monitoring_settings(
    settings: FlywheelSettings, pytestconfig: pytest.Config, unique_name: str
) -> FlywheelSettings:
    """Session settings with offset monitor ports, a private database and fast evaluation."""
    offset = pytestconfig.getoption("--stack-port-offset")
    monitoring = _MONITORING_DEFAULTS.model_copy(update={
        "metrics_port": _MONITORING_DEFAULTS.metrics_port + offset,
        "receiver_port": _MONITORING_DEFAULTS.receiver_port + offset,
        "evaluation_interval_s": 3.0, "current_window_s": 600, "reference_period_s": 3600,
        "min_window_rows": 30, "permutations": 200,
    })
    receiver_url = f"http://{monitoring.receiver_host}:{monitoring.receiver_port}/alerts"
    return settings.model_copy(update={
        "monitoring": monitoring,
        "clickhouse": settings.clickhouse.model_copy(update={"database": unique_name}),
        "alertmanager": settings.alertmanager.model_copy(update={"webhook_url": receiver_url}),
    })


@pytest.fixture
def warehouse(running: Callable[..., Supervisor], monitoring_settings: FlywheelSettings
              ) -> Iterator[Any]:
    """A migrated database of its own; dropped afterwards."""
    running("clickhouse")
    with migrated_database(monitoring_settings) as client:
        yield client


@pytest.fixture
def wired_stack(
    running: Callable[..., Supervisor], settings: FlywheelSettings,
    monitoring_settings: FlywheelSettings,
) -> Iterator[Supervisor]:
    """Prometheus scraping this test's monitor and Alertmanager posting to its receiver.

    The configs are re-rendered from the test's settings and reloaded, then restored.
    """
    stack = running("clickhouse", "kafka", "prometheus", "alertmanager")
    prometheus, alertmanager = PrometheusService(settings), AlertmanagerService(settings)
    _apply(prometheus.config_path, prometheus_config(monitoring_settings),
           settings.prometheus.http_url)
    _apply(alertmanager.config_path, alertmanager_config(monitoring_settings),
           settings.alertmanager.http_url)
    try:
        yield stack
    finally:
        _apply(prometheus.config_path, prometheus_config(settings), settings.prometheus.http_url)
        _apply(alertmanager.config_path, alertmanager_config(settings),
               settings.alertmanager.http_url)


def _apply(path: Any, config: dict[str, Any], url: str) -> None:
    write_config(path, config)
    httpx.post(f"{url}/-/reload", timeout=10).raise_for_status()


@pytest.fixture
def alerts_topic(running: Callable[..., Supervisor], settings: FlywheelSettings,
                 unique_name: str) -> str:
    running("kafka")
    spec = dataclasses.replace(ALERTS, name=unique_name)
    ensure_topics(settings, [spec])
    return spec.name


class ServerThread:
    """A uvicorn server in a thread, stopped by `stop`."""

    def __init__(self, app: Any, *, host: str, port: int) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, *, timeout_s: float = 10) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the receiver did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
