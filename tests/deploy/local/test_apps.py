"""Flywheel's own processes under the supervisor, with settings handed down to them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from deploy.local.apps import APPS, AppService, build_apps
from deploy.local.stack import build_apps_supervisor
from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings, settings_to_json


def test_every_app_has_a_unique_name_and_a_flywheel_command() -> None:
    names = [spec.name for spec in APPS]
    assert len(names) == len(set(names))
    assert all(len(spec.args) >= 2 for spec in APPS)


def test_app_ports_come_from_the_settings_and_name_their_variable(
    settings: FlywheelSettings,
) -> None:
    ports = {s.name: s.ports() for s in build_apps(settings)}
    assert ports["ingest"][0].port == settings.ingest.port
    assert ports["ingest"][0].setting == "FLYWHEEL_INGEST__PORT"
    assert ports["gateway"][0].setting == "FLYWHEEL_INFERENCE__GATEWAY_PORT"
    assert ports["trainer-watch"] == []


@pytest.mark.integration
def test_the_ingest_app_starts_with_the_parents_settings_and_stops_cleanly(
    running: Callable[..., Supervisor], settings: FlywheelSettings
) -> None:
    running("kafka")
    apps = build_apps_supervisor(settings)
    try:
        [row] = apps.up(["ingest"])
        assert row.healthy and row.pid is not None
        # The child listens on the test port (not the default): the settings reached it.
        response = httpx.post(
            f"http://{settings.ingest.host}:{settings.ingest.port}/v1/events/chat",
            content=b"{}", headers={"Authorization": "Bearer flywheel-dev-key"}, timeout=30,
        )
        assert response.status_code == 422
    finally:
        apps.down()
    assert {r.name: r for r in apps.status()}["ingest"].pid is None


def test_apps_logs_prints_the_end_of_a_process_log_and_names_the_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from deploy.cli import app
    from deploy.clickhouse.config import SETTINGS_ENV

    settings = FlywheelSettings(state_dir=tmp_path)
    monkeypatch.setenv(SETTINGS_ENV, settings_to_json(settings))
    log = build_apps_supervisor(settings).get("streams-worker").log_path
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(f"line {i}\n" for i in range(10)))
    result = CliRunner().invoke(app, ["apps", "logs", "streams-worker", "-n", "2"])
    assert result.exit_code == 0, result.output
    assert result.output.split() == ["line", "8", "line", "9"]
    result = CliRunner().invoke(app, ["apps", "logs", "stream-worker"])
    assert result.exit_code != 0  # `flywheel` prints the StackError's message and exits 1
    message = str(result.exception)
    assert "'stream-worker'" in message and "streams-worker" in message and "gateway" in message


def test_the_worker_is_healthy_by_the_gauge_it_sets_once_assigned_and_every_app_is_kept(
    settings: FlywheelSettings,
) -> None:
    from streams.worker import READY_METRIC

    apps = {s.name: s for s in build_apps(settings)}
    worker = apps["streams-worker"]
    assert isinstance(worker, AppService)
    assert worker.spec.ready_metric == READY_METRIC
    assert all(app.restart_on_exit for app in apps.values())
