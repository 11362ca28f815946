"""Fixtures for the embedded ClickHouse: the session stack's server, and servers of our own."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.clickhouse.client import get_client
from deploy.clickhouse.passwords import client_password, stored_password
from deploy.local.clickhouse import ClickHouseService
from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings
from tests.conftest import make_test_settings


@pytest.fixture(scope="session")
def clickhouse(
    request: pytest.FixtureRequest, settings: FlywheelSettings
) -> Iterator[FlywheelSettings]:
    """The session stack's ClickHouse, up; returns the settings that reach it.

    While other services of the stack are not written yet (their modules missing),
    a supervisor of ClickHouse alone runs it the same way, and stops it at the end.
    """
    try:
        running: Callable[..., Supervisor] = request.getfixturevalue("running")
    except ModuleNotFoundError:
        supervisor = Supervisor([ClickHouseService(settings)],
                                stop_timeout_s=settings.stop_timeout_s)
        supervisor.up()
        try:
            yield settings
        finally:
            supervisor.down()
        return
    running("clickhouse")
    yield settings


@pytest.fixture
def client(clickhouse: FlywheelSettings) -> Iterator[Any]:
    c = get_client(clickhouse)
    try:
        yield c
    finally:
        c.close()


def admin_auth(settings: FlywheelSettings) -> httpx.BasicAuth:
    """Basic auth of Flywheel's own account (its generated password)."""
    return httpx.BasicAuth(settings.clickhouse.user, client_password(settings))


def analyst_auth(settings: FlywheelSettings) -> httpx.BasicAuth:
    """Basic auth of the read-only `analyst` account (its generated password)."""
    return httpx.BasicAuth("analyst", stored_password(settings.state_path, "analyst"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnServer:
    """A server process a test starts, kills and restarts itself (not the session stack's)."""

    def __init__(self, state_dir: Path, **clickhouse: Any) -> None:
        base = make_test_settings(state_dir)
        self.settings = make_test_settings(
            state_dir,
            clickhouse=base.clickhouse.model_copy(update={"port": free_port(), **clickhouse}),
        )
        self.service = ClickHouseService(self.settings)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.settings.clickhouse.http_url

    def start(self, *, timeout_s: float = 60.0) -> None:
        spec = self.service.launch_spec()
        self.settings.state_path.mkdir(parents=True, exist_ok=True)
        with (self.settings.state_path / "clickhouse.log").open("ab") as log:
            self.process = subprocess.Popen(spec.argv, env={**os.environ, **spec.env},
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "the server exited while starting"
            if self.service.check_health().healthy:
                return
            time.sleep(0.1)
        raise AssertionError("the server did not answer /ping in time")

    def stop(self, sig: int, *, timeout_s: float = 30.0) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout_s)
        self.process = None
        return code

    def client(self) -> Any:
        return get_client(self.settings)

    def post(self, query: str, **kwargs: Any) -> httpx.Response:
        kwargs.setdefault("auth", admin_auth(self.settings))
        return httpx.post(self.url, params={"query": query}, timeout=30, **kwargs)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[Callable[..., OwnServer]]:
    """Factory of servers with their own state folder and port; all are killed at the end."""
    started: list[OwnServer] = []

    def make(**clickhouse: Any) -> OwnServer:
        server = OwnServer(tmp_path / f"state{len(started)}", **clickhouse)
        started.append(server)
        return server

    yield make
    for server in started:
        if server.process is not None and server.process.poll() is None:
            server.process.kill()
            server.process.wait()
