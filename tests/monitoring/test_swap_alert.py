"""A refused version reaches on-call: Alertmanager, the alerts table, `flywheel alerts
list`, and `refused` with its reason in model_versions. All services real.

The controller runs as `flywheel inference controller` does (`run_controller`); the
receiver as `flywheel alerts receiver` does; Alertmanager is the stack's, re-pointed at
this test's receiver.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc as grpcclient
from typer.testing import CliRunner

from deploy.cli import app
from deploy.local.supervisor import Supervisor
from deploy.settings import SETTINGS_ENV, FlywheelSettings, settings_to_json
from inference.client import TritonChat
from inference.controller import run_controller
from inference.events import ModelPublishedProducer
from inference.gateway.server import free_port
from inference.repository import adapter_sha256, next_version
from inference.swap import ALERT_NAMES, ALERT_SWAP_FAILED, SwapController
from inference.watchdog import ALERT_NOT_SERVING
from monitoring.alertmanager import AlertmanagerClient
from monitoring.alerts import AlertSink
from monitoring.platform_alerts import PlatformAlerts, runbook_of
from monitoring.receiver import build_receiver_app
from schemas import Alert, DatasetSnapshot, ModelPublished, Severity
from streams.topics import MODELS_PUBLISHED, ensure_topics
from tests.deploy.local.polling import wait_for
from tests.inference.conftest import read_topic, tiny_adapter, tiny_base  # noqa: F401
from tests.monitoring.conftest import ServerThread
from trainer.publish import record_version


def published(model: str, version: int, adapter: Path, *, sha256: str, base: Path
              ) -> ModelPublished:
    return ModelPublished(
        model=model, version=version, adapter_id=f"{model}-v{version}", base_model=str(base),
        adapter_uri=str(adapter), adapter_sha256=sha256, previous_version=1,
        dataset=DatasetSnapshot(window_start=datetime(2031, 1, 1, tzinfo=UTC),
                                window_end=datetime(2031, 1, 2, tzinfo=UTC), query="q",
                                train_rows=10, validation_rows=2, content_sha256="b" * 64))


@pytest.fixture
def setup(
    running: Callable[..., Supervisor], wired_stack: Supervisor, warehouse: Any,
    monitoring_settings: FlywheelSettings, tiny_base: Path,  # noqa: F811
    alerts_topic: str,
) -> Iterator[tuple[FlywheelSettings, Any]]:
    """Triton with this test's model (the base live), the receiver on this test's database."""
    running("triton")
    name = f"refuse-{uuid.uuid4().hex[:10]}"
    settings = monitoring_settings.model_copy(update={
        "inference": monitoring_settings.inference.model_copy(
            update={"drain_s": 0.5, "routing_poll_interval_s": 0.1, "device": "cpu"}),
        "model": monitoring_settings.model.model_copy(update={"name": name}),
    })
    SwapController(settings).start(base_model=tiny_base)
    monitoring = settings.monitoring
    sink = AlertSink(settings, topic=alerts_topic)
    receiver = ServerThread(build_receiver_app(sink), host=monitoring.receiver_host,
                            port=monitoring.receiver_port)
    receiver.start()
    try:
        yield settings, warehouse
    finally:
        receiver.stop()
        sink.close()
        with closing(grpcclient.InferenceServerClient(settings.triton.grpc_address)) as c:
            c.unload_model(name)
        shutil.rmtree(settings.triton_model_repository() / name, ignore_errors=True)


@pytest.mark.integration
def test_refused_versions_reach_alertmanager_the_alerts_table_the_cli_and_model_versions(
    setup: tuple[FlywheelSettings, Any], tiny_base: Path, tiny_adapter: Path,  # noqa: F811
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings, client = setup
    model = settings.model.name
    repo = settings.triton_model_repository()
    truncated = tmp_path / "truncated"
    shutil.copytree(tiny_adapter, truncated)
    weights = truncated / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    broken = next_version(repo, model)
    tampered = broken + 1
    events = [
        # Its hash matches what was published; the serving model cannot read the weights.
        published(model, broken, truncated, sha256=adapter_sha256(truncated), base=tiny_base),
        # A good adapter whose bytes are not what the trainer published.
        published(model, tampered, tiny_adapter, sha256="c" * 64, base=tiny_base),
    ]
    for event in events:
        record_version(client, settings, event)  # `published`, as the trainer writes it
    topic = f"{MODELS_PUBLISHED.name}.t{uuid.uuid4().hex[:10]}"
    ensure_topics(settings, [dataclasses.replace(MODELS_PUBLISHED, name=topic)])
    stop = threading.Event()
    runner = threading.Thread(target=run_controller, args=(settings,),
                              kwargs={"stop": stop, "topic": topic})
    runner.start()
    alertmanager = AlertmanagerClient(settings.alertmanager.http_url)

    def refused_in_alertmanager() -> set[str]:
        return {a.labels.get("version", "") for a in alertmanager.alerts()
                if a.name == ALERT_SWAP_FAILED and a.labels.get("model") == model}

    def stored() -> list[tuple[Any, ...]]:
        return client.query(
            "SELECT labels['version'], severity, runbook_url, summary FROM alerts FINAL "
            "WHERE name = {n:String} AND labels['model'] = {m:String} ORDER BY 1",
            parameters={"n": ALERT_SWAP_FAILED, "m": model}).result_rows

    try:
        with ModelPublishedProducer(settings.kafka, producer_name="test", topic=topic) as p:
            for event in events:
                p.publish(event)
        expected = {str(broken), str(tampered)}
        assert wait_for(lambda: refused_in_alertmanager() == expected, timeout_s=120), \
            refused_in_alertmanager()
        # Alertmanager's group_wait, then its webhook to the receiver.
        assert wait_for(lambda: len(stored()) == 2, timeout_s=60), stored()
    finally:
        stop.set()
        runner.join(60)

    rows = stored()
    assert [r[0] for r in rows] == sorted(expected)
    assert {(r[1], r[2]) for r in rows} == {
        ("critical", f"docs/runbooks/{ALERT_SWAP_FAILED}.md")}
    assert "sha256" in rows[1][3]
    assert (Path(__file__).resolve().parents[2] / rows[0][2]).is_file()

    monkeypatch.setenv(SETTINGS_ENV, settings_to_json(settings))
    listed = CliRunner().invoke(app, ["alerts", "list"], env={"COLUMNS": "250"})
    assert listed.exit_code == 0, listed.output
    assert ALERT_SWAP_FAILED in listed.output and f"{model} version {tampered}" in listed.output

    versions = dict(((v, (s, r)) for v, s, r in client.query(
        "SELECT version, status, status_reason FROM model_versions FINAL "
        "WHERE model = {m:String}", parameters={"m": model}).result_rows))
    assert versions[1] == ("serving", "")
    assert versions[broken][0] == "refused" and versions[broken][1].startswith("publish: ")
    assert versions[tampered][0] == "refused" and "sha256" in versions[tampered][1]
    with TritonChat(settings.triton.grpc_address, model=model) as chat:
        assert chat.complete("user: still there?").adapter_id == "base"


PLATFORM_ALERTS = [*ALERT_NAMES, ALERT_NOT_SERVING, "FlywheelAutomaticAction"]


@pytest.mark.parametrize("name", PLATFORM_ALERTS)
def test_every_alert_a_flywheel_process_raises_has_a_runbook_with_the_usual_sections(
    name: str,
) -> None:
    runbook = Path(__file__).resolve().parents[2] / runbook_of(name)
    assert runbook.is_file(), f"write {runbook}"
    text = runbook.read_text()
    for heading in ("## What it means", "## First checks", "## Mitigation", "## Escalation"):
        assert heading in text, f"{runbook} lacks {heading}"


@pytest.mark.integration
def test_a_platform_alert_is_stored_directly_when_alertmanager_is_unreachable(
    warehouse: Any, monitoring_settings: FlywheelSettings, alerts_topic: str,
) -> None:
    host = monitoring_settings.alertmanager.host
    down = monitoring_settings.model_copy(update={"alertmanager": monitoring_settings
                                                  .alertmanager.model_copy(
                                                      update={"port": free_port(host)})})
    sender = PlatformAlerts(down, fallback_topic=alerts_topic)
    try:
        sender.send(Alert(name=ALERT_SWAP_FAILED, status="firing", severity=Severity.CRITICAL,
                          summary="m version 9 was not deployed (publish): a test",
                          labels={"model": "m", "version": "9"}))
    finally:
        sender.close()

    rows = warehouse.query("SELECT name, runbook_url, labels['version'] FROM alerts").result_rows
    assert rows == [(ALERT_SWAP_FAILED, f"docs/runbooks/{ALERT_SWAP_FAILED}.md", "9")]
    found = read_topic(monitoring_settings, alerts_topic, until=lambda got: len(got) >= 1)
    assert [a.name for a in found] == [ALERT_SWAP_FAILED]
