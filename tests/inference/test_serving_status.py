"""Serving status in ClickHouse: every switch is recorded in model_versions.

The real Triton swaps a tiny model; the real (embedded) ClickHouse holds a freshly
migrated database per test. The trainer's `served_version` reads what the controller wrote.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc as grpcclient

from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings
from inference.client import TritonChat
from inference.errors import SwapError, TritonUnavailableError
from inference.gateway.server import free_port
from inference.repository import adapter_sha256, version_dir
from inference.routing import read_routing
from inference.serving_status import ZERO_SHA256
from inference.swap import SwapController
from schemas import DatasetSnapshot, ModelPublished
from tests.deploy.local.polling import wait_for
from tests.inference.conftest import add_adapter_version
from trainer.publish import record_version, served_version

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model(
    running: Callable[..., Supervisor], settings: FlywheelSettings, tiny_base: Path
) -> Iterator[str]:
    """One Triton model for the module (loads cost seconds), version 1 live at first."""
    running("triton", "clickhouse")
    name = f"status-{uuid.uuid4().hex[:10]}"
    inference = settings.inference.model_copy(update={"device": "cpu"})
    SwapController(settings.model_copy(update={"inference": inference}),
                   model=name).start(base_model=tiny_base)
    try:
        yield name
    finally:
        with closing(grpcclient.InferenceServerClient(settings.triton.grpc_address)) as c:
            c.unload_model(name)
        shutil.rmtree(settings.triton_model_repository() / name, ignore_errors=True)


@pytest.fixture
def warehouse(
    swap_settings: FlywheelSettings, unique_name: str, model: str
) -> Iterator[tuple[Any, FlywheelSettings]]:
    """A migrated database of this test's own, and settings pointing at it and the model."""
    from deploy.clickhouse.client import get_client
    from deploy.warehouse import migrate

    isolated = swap_settings.model_copy(update={
        "clickhouse": swap_settings.clickhouse.model_copy(update={"database": unique_name}),
        "model": swap_settings.model.model_copy(update={"name": model}),
    })
    admin = get_client(isolated, database="default")
    migrate(admin, isolated)
    client = get_client(isolated)
    try:
        yield client, isolated
    finally:
        client.close()
        admin.command(f"DROP DATABASE IF EXISTS {unique_name}")
        admin.close()


def statuses(client: Any, settings: FlywheelSettings) -> dict[int, str]:
    rows = client.query(
        f"SELECT version, status FROM {settings.clickhouse.database}.model_versions FINAL "
        "WHERE model = {m:String}", parameters={"m": settings.model.name}).result_rows
    return {int(v): s for v, s in rows}


def publish_row(client: Any, settings: FlywheelSettings, version: int, *, train_rows: int
                ) -> None:
    """What the trainer records when it publishes `version`."""
    repo, model = settings.triton_model_repository(), settings.model.name
    adapter = version_dir(repo, model, version) / "adapter"
    record_version(client, settings, ModelPublished(
        model=model, version=version, adapter_id=f"{model}-v{version}",
        base_model="base", adapter_uri=str(adapter), adapter_sha256=adapter_sha256(adapter),
        previous_version=None, metrics={"perplexity_new": 12.5},
        dataset=DatasetSnapshot(window_start=datetime(2032, 1, 1, tzinfo=UTC),
                                window_end=datetime(2032, 1, 2, tzinfo=UTC), query="q",
                                train_rows=train_rows, validation_rows=10,
                                content_sha256="a" * 64)))


def to_base(client: Any, settings: FlywheelSettings) -> SwapController:
    """Version 1 live (the module shares one model) and an empty model_versions."""
    controller = SwapController(settings)
    routing = read_routing(controller.repo, controller.model)
    if routing is not None and routing.live != 1:
        controller.deploy(1, reason="promote")
    client.command(f"TRUNCATE TABLE {settings.clickhouse.database}.model_versions")
    return controller


def test_start_records_the_bare_base_as_serving_with_a_minimal_row(
    warehouse: tuple[Any, FlywheelSettings],
) -> None:
    client, settings = warehouse
    controller = to_base(client, settings)

    controller.start()

    rows = client.query(
        "SELECT version, status, adapter_id, adapter_uri, toString(adapter_sha256), train_rows "
        f"FROM {settings.clickhouse.database}.model_versions FINAL").result_rows
    assert rows == [(1, "serving", "base", "", ZERO_SHA256, 0)]
    served = served_version(client, settings)
    assert served is not None and (served.version, served.adapter_dir) == (1, None)


def test_a_deploy_marks_the_new_version_serving_and_the_old_one_retired_keeping_its_row(
    warehouse: tuple[Any, FlywheelSettings], tiny_base: Path, tiny_adapter: Path,
) -> None:
    client, settings = warehouse
    controller = to_base(client, settings)
    version = add_adapter_version(settings, settings.model.name, tiny_base, tiny_adapter,
                                  adapter_id="adapter-status")
    publish_row(client, settings, version, train_rows=240)
    assert served_version(client, settings) is None  # published is not serving

    controller.deploy(version)

    assert statuses(client, settings) == {1: "retired", version: "serving"}
    [(train_rows, metrics, window_start)] = client.query(
        "SELECT train_rows, metrics, window_start FROM "
        f"{settings.clickhouse.database}.model_versions FINAL WHERE version = {version}"
    ).result_rows
    assert (train_rows, metrics) == (240, {"perplexity_new": 12.5})
    assert window_start.year == 2032
    served = served_version(client, settings)
    assert served is not None and served.version == version
    assert served.adapter_dir == version_dir(controller.repo, controller.model, version) / "adapter"


def test_a_rollback_marks_the_version_rolled_back_and_the_previous_one_serving(
    warehouse: tuple[Any, FlywheelSettings], tiny_base: Path, tiny_adapter: Path,
) -> None:
    client, settings = warehouse
    controller = to_base(client, settings)
    first = add_adapter_version(settings, settings.model.name, tiny_base, tiny_adapter,
                                adapter_id="adapter-first")
    second = add_adapter_version(settings, settings.model.name, tiny_base, tiny_adapter,
                                 adapter_id="adapter-second")
    controller.deploy(first)
    controller.deploy(second)

    controller.rollback()

    assert statuses(client, settings) == {1: "retired", first: "serving",
                                          second: "rolled_back"}
    served = served_version(client, settings)
    assert served is not None and served.version == first


def test_a_stale_serving_row_is_retired_at_the_next_switch(
    warehouse: tuple[Any, FlywheelSettings], tiny_base: Path, tiny_adapter: Path,
) -> None:
    client, settings = warehouse
    controller = to_base(client, settings)
    stale = add_adapter_version(settings, settings.model.name, tiny_base, tiny_adapter,
                                adapter_id="adapter-stale")
    publish_row(client, settings, stale, train_rows=5)
    controller.serving_status.ensure_serving(stale)  # as if a later write had been lost
    version = add_adapter_version(settings, settings.model.name, tiny_base, tiny_adapter,
                                  adapter_id="adapter-new")

    controller.deploy(version)

    assert statuses(client, settings) == {1: "retired", stale: "retired", version: "serving"}


def test_a_swap_stands_and_the_failure_is_logged_when_clickhouse_is_unreachable(
    warehouse: tuple[Any, FlywheelSettings], tiny_base: Path, tiny_adapter: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, settings = warehouse
    to_base(client, settings)
    down = settings.model_copy(update={
        "clickhouse": settings.clickhouse.model_copy(update={"port": free_port()})})
    controller = SwapController(down)
    version = add_adapter_version(settings, settings.model.name, tiny_base, tiny_adapter,
                                  adapter_id="adapter-unrecorded")

    with caplog.at_level(logging.ERROR, logger="inference.swap"):
        result = controller.deploy(version)

    assert result.live == version
    assert read_routing(controller.repo, controller.model).live == version  # type: ignore[union-attr]
    assert any("serving status not recorded" in r.getMessage() for r in caplog.records)
    assert statuses(client, settings) == {}
    SwapController(settings).start()  # ClickHouse back: the next start catches up
    assert statuses(client, settings) == {version: "serving"}


def test_a_refused_version_is_recorded_refused_with_its_reason_and_the_live_one_serves_on(
    warehouse: tuple[Any, FlywheelSettings], tiny_base: Path, tiny_adapter: Path,
) -> None:
    client, settings = warehouse
    controller = to_base(client, settings)
    controller.start()
    version = add_adapter_version(settings, settings.model.name, tiny_base, tiny_adapter,
                                  adapter_id="adapter-nan")
    publish_row(client, settings, version, train_rows=12)
    weights = version_dir(controller.repo, controller.model, version) / "adapter"
    (weights / "adapter_model.safetensors").write_bytes(b"\x00" * 64)  # unreadable

    with pytest.raises(SwapError, match="version 1 keeps serving"):
        controller.deploy(version)

    assert statuses(client, settings) == {1: "serving", version: "refused"}
    [(reason, train_rows)] = client.query(
        f"SELECT status_reason, train_rows FROM {settings.clickhouse.database}.model_versions "
        f"FINAL WHERE version = {version}").result_rows
    assert reason.startswith("deploy: ") and len(reason) > len("deploy: ")
    assert train_rows == 12  # the trainer's row, with only the status and reason changed
    served = served_version(client, settings)
    assert served is not None and served.version == 1


def test_a_version_that_never_existed_leaves_no_refused_row(
    warehouse: tuple[Any, FlywheelSettings],
) -> None:
    client, settings = warehouse
    controller = to_base(client, settings)
    controller.start()

    with pytest.raises(SwapError):
        controller.deploy(999)

    assert statuses(client, settings) == {1: "serving"}


def test_restore_reloads_the_live_version_after_triton_lost_the_model(
    warehouse: tuple[Any, FlywheelSettings], tiny_base: Path, tiny_adapter: Path,
    triton_client: grpcclient.InferenceServerClient,
) -> None:
    client, settings = warehouse
    controller = to_base(client, settings)
    version = add_adapter_version(settings, settings.model.name, tiny_base, tiny_adapter,
                                  adapter_id="adapter-restore")
    controller.deploy(version)
    assert controller.restore() is None  # ready: nothing to do
    triton_client.unload_model(controller.model)  # what a Triton restart leaves behind
    assert wait_for(lambda: not triton_client.is_model_ready(controller.model), timeout_s=30)

    assert controller.restore() == version

    with TritonChat(settings.triton.grpc_address, model=controller.model) as chat:
        assert chat.complete("user: back?").adapter_id == "adapter-restore"
    assert statuses(client, settings)[version] == "serving"


def test_a_deploy_while_triton_is_unreachable_raises_and_refuses_nothing(
    warehouse: tuple[Any, FlywheelSettings], tiny_base: Path, tiny_adapter: Path,
) -> None:
    client, settings = warehouse
    to_base(client, settings).start()
    version = add_adapter_version(settings, settings.model.name, tiny_base, tiny_adapter,
                                  adapter_id="adapter-outage")
    publish_row(client, settings, version, train_rows=3)
    down = settings.model_copy(update={
        "triton": settings.triton.model_copy(update={"grpc_port": free_port()})})
    alerts: list[Any] = []
    controller = SwapController(down, alert_sink=alerts.append)

    with pytest.raises(TritonUnavailableError):
        controller.deploy(version)

    assert statuses(client, settings) == {1: "serving", version: "published"}
    assert alerts == []  # the watchdog's FlywheelModelNotServing covers an outage
    assert read_routing(controller.repo, controller.model).live == 1  # type: ignore[union-attr]
