"""A slow model on the real Triton fires FlywheelModelLatencyHigh through the real Prometheus,
from the per-version series the served model exports (`version_metrics`), with the p99
threshold taken from settings via the monitor's exported gauge."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from deploy.settings import FlywheelSettings
from monitoring.exporter import DriftExporter
from tests.deploy.local.polling import wait_for

SLEEPY_MODEL = Path(__file__).parent / "models" / "sleepy"
VERSION_METRICS = (Path(__file__).resolve().parents[2] / "inference" / "triton_model"
                   / "version_metrics.py")


@pytest.fixture
def sleepy_model(wired_stack: Any, running: Any, settings: FlywheelSettings, unique_name: str
                 ) -> Iterator[tuple[str, grpcclient.InferenceServerClient]]:
    running("triton")
    target = settings.triton_model_repository() / unique_name
    shutil.copytree(SLEEPY_MODEL, target, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(VERSION_METRICS, target / "1" / VERSION_METRICS.name)
    with closing(grpcclient.InferenceServerClient(settings.triton.grpc_address)) as client:
        client.load_model(unique_name)
        try:
            yield unique_name, client
        finally:
            client.unload_model(unique_name)
            shutil.rmtree(target, ignore_errors=True)


def firing(settings: FlywheelSettings, model: str) -> list[dict[str, Any]]:
    import httpx

    alerts = httpx.get(f"{settings.prometheus.http_url}/api/v1/alerts", timeout=5).json()
    return [a for a in alerts["data"]["alerts"]
            if a["labels"]["alertname"] == "FlywheelModelLatencyHigh"
            and a["labels"].get("model") == model and a["state"] == "firing"]


@pytest.mark.integration
@pytest.mark.slow
def test_a_model_slower_than_its_p99_threshold_fires_the_latency_alert(
    sleepy_model: tuple[str, grpcclient.InferenceServerClient],
    monitoring_settings: FlywheelSettings,
) -> None:
    model, client = sleepy_model
    monitoring = monitoring_settings.monitoring.model_copy(
        update={"latency_p99_thresholds_s": {model: 0.1}})
    exporter = DriftExporter()
    exporter.set_latency_thresholds(monitoring_settings.model_copy(
        update={"monitoring": monitoring}))
    server = exporter.serve(host=monitoring.metrics_host, port=monitoring.metrics_port)
    stop = threading.Event()

    def traffic() -> None:
        text = grpcclient.InferInput("TEXT", [1], "BYTES")
        text.set_data_from_numpy(np.array([b"hello"], dtype=object))
        while not stop.is_set():
            client.infer(model, [text])

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        assert wait_for(lambda: bool(firing(monitoring_settings, model)), timeout_s=180,
                        interval_s=2)
        [alert] = firing(monitoring_settings, model)
        assert alert["labels"]["severity"] == "critical"
        assert alert["labels"]["version"] == "1"
        assert float(alert["value"]) >= 0.3
        assert alert["annotations"]["runbook_url"] == "docs/runbooks/FlywheelModelLatencyHigh.md"
    finally:
        stop.set()
        sender.join(10)
        server.shutdown()  # type: ignore[attr-defined]
        server.server_close()  # type: ignore[attr-defined]
