"""Shared fixtures: one settings object and one real local stack per test session.

The test stack uses its own state folder and ports (offset from the defaults) so that
it never collides with a developer's `flywheel stack up`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings

# Test ports: the defaults + 20000 (e.g. Kafka 29092, ClickHouse 28123, Triton 28000).
# Two test sessions at once on one machine pass different --stack-port-offset values.
PORT_OFFSET = 20000


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--stack-port-offset", type=int, default=PORT_OFFSET,
        help="Added to every default port of the test stack (default 20000).",
    )


def make_test_settings(
    state_dir: Path, *, port_offset: int = PORT_OFFSET, **overrides: object
) -> FlywheelSettings:
    """Settings whose every port (any field named `port` or `*_port`) is moved by the offset."""
    defaults = FlywheelSettings()
    sections: dict[str, object] = {}
    for name in type(defaults).model_fields:
        section = getattr(defaults, name)
        if not isinstance(section, BaseModel):
            continue
        moved = {
            field: getattr(section, field) + port_offset
            for field in type(section).model_fields
            if field == "port" or field.endswith("_port")
        }
        if moved:
            sections[name] = section.model_copy(update=moved)
    sections.update(overrides)
    return FlywheelSettings(state_dir=state_dir, **sections)


def with_database(settings: FlywheelSettings, database: str) -> FlywheelSettings:
    """`settings` pointed at another ClickHouse database."""
    return settings.model_copy(update={
        "clickhouse": settings.clickhouse.model_copy(update={"database": database})})


@contextmanager
def migrated_database(settings: FlywheelSettings, **client_options: Any) -> Iterator[Any]:
    """A client on `settings`' database, migrated first and dropped afterwards.

    `client_options` go to `get_client` (`readonly=True`, say); ClickHouse must be up.
    """
    from deploy.clickhouse.client import get_client
    from deploy.warehouse import migrate

    admin = get_client(settings, database="default")
    try:
        migrate(admin, settings)
        client = get_client(settings, **client_options)
        try:
            yield client
        finally:
            client.close()
    finally:
        admin.command(f"DROP DATABASE IF EXISTS {settings.clickhouse.database}")
        admin.close()


@pytest.fixture(scope="session")
def settings(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> FlywheelSettings:
    """Settings for the session's test stack."""
    return make_test_settings(
        tmp_path_factory.mktemp("flywheel-state"),
        port_offset=pytestconfig.getoption("--stack-port-offset"),
    )


@pytest.fixture(scope="session")
def stack(settings: FlywheelSettings) -> Iterator[Supervisor]:
    """The session's supervisor; every service any test started is stopped at the end."""
    from deploy.local.stack import build_stack

    supervisor = build_stack(settings)
    try:
        yield supervisor
    finally:
        supervisor.down()


@pytest.fixture(scope="session")
def running(stack: Supervisor) -> Callable[..., Supervisor]:
    """Bring up the named services (once per session) and return the supervisor.

    Usage: ``running("kafka")`` in a test or fixture that needs a live broker.
    """

    def _up(*names: str) -> Supervisor:
        stack.up(names or None)
        return stack

    return _up


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A name no other test uses, for topics and tables."""
    base = "".join(c if c.isalnum() else "_" for c in request.node.name)[:40]
    return f"t_{base}_{uuid.uuid4().hex[:8]}"
