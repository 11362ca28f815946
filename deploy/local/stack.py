"""The services of the local stack, in start order."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from deploy.local.supervisor import Supervisor

if TYPE_CHECKING:
    from deploy.local.service import Service
    from deploy.settings import FlywheelSettings

# (module, class) of each service, in the order `up` starts them and `down` stops them
# in reverse. Imported lazily so `flywheel config show` does not pay for torch or chDB.
SERVICES: tuple[tuple[str, str], ...] = (
    ("deploy.local.clickhouse", "ClickHouseService"),
    ("deploy.local.kafka", "KafkaService"),
    ("deploy.local.triton", "TritonService"),
    ("deploy.local.prometheus", "PrometheusService"),
    ("deploy.local.prometheus", "AlertmanagerService"),
)


def build_services(settings: FlywheelSettings) -> list[Service]:
    services: list[Service] = []
    for module_name, class_name in SERVICES:
        cls = getattr(importlib.import_module(module_name), class_name)
        services.append(cls(settings))
    return services


def build_stack(settings: FlywheelSettings) -> Supervisor:
    """The supervisor of every service the settings describe."""
    return Supervisor(build_services(settings), stop_timeout_s=settings.stop_timeout_s)


def build_apps_supervisor(settings: FlywheelSettings) -> Supervisor:
    """The supervisor of Flywheel's own processes (workers, APIs, controller, monitor)."""
    from deploy.local.apps import build_apps

    return Supervisor(build_apps(settings), stop_timeout_s=settings.stop_timeout_s)
