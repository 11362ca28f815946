"""The local stack's ClickHouse comes back by itself after a kill -9, with its data."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from deploy.clickhouse.client import get_client
from deploy.local.clickhouse import ClickHouseService
from deploy.local.keeper import KeeperState
from deploy.local.supervisor import Supervisor
from tests.conftest import make_test_settings
from tests.deploy.clickhouse.conftest import free_port

pytestmark = pytest.mark.integration


def test_a_killed_server_is_restarted_by_its_keeper_with_every_row(tmp_path: Path) -> None:
    base = make_test_settings(tmp_path / "state")
    settings = make_test_settings(
        tmp_path / "state", clickhouse=base.clickhouse.model_copy(update={"port": free_port()}))
    service = ClickHouseService(settings)
    supervisor = Supervisor([service], stop_timeout_s=settings.stop_timeout_s)
    supervisor.up()
    try:
        with get_client(settings) as client:
            client.command("CREATE TABLE t (a UInt32) ENGINE = MergeTree ORDER BY a")
            client.insert("t", [[i] for i in range(1000)], column_names=["a"])
        first = KeeperState.read(service.keeper_path)
        assert first is not None and first.child_pid
        os.kill(first.child_pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        state = first
        while time.monotonic() < deadline:
            state = KeeperState.read(service.keeper_path) or state
            if state.restarts >= 1 and service.check_health().healthy:
                break
            time.sleep(0.2)
        assert state.restarts == 1 and state.child_pid != first.child_pid
        assert state.last_exit_code == -signal.SIGKILL
        with get_client(settings) as client:
            assert client.command("SELECT count() FROM t") == 1000
    finally:
        supervisor.down()
