"""Worker options that need no services: where /metrics is served."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from deploy.cli import app
from deploy.settings import FlywheelSettings
from streams.worker import StreamWorker


def test_worker_serves_metrics_on_the_settings_port_by_default(
        settings: FlywheelSettings) -> None:
    assert StreamWorker(settings).metrics_port == settings.metrics.port


@pytest.mark.parametrize("options,expected", [
    ({"metrics_port": 0}, 0), ({"metrics_port": 19_191}, 19_191),
    ({"serve_metrics": False, "metrics_port": 19_191}, 0),
])
def test_worker_metrics_port_can_be_moved_or_turned_off(
        settings: FlywheelSettings, options: dict[str, Any], expected: int) -> None:
    assert StreamWorker(settings, **options).metrics_port == expected


def test_cli_worker_passes_metrics_port_through(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr("streams.worker.run_worker", lambda _s, **kw: seen.update(kw))
    result = CliRunner().invoke(app, ["streams", "worker", "--metrics-port", "0"])
    assert result.exit_code == 0, result.output
    assert seen["metrics_port"] == 0
    result = CliRunner().invoke(app, ["streams", "worker", "--metrics-port", "9309"])
    assert seen["metrics_port"] == 9309
