"""Flywheel's own processes, run by the same supervisor as the stack's services.

Each is a `flywheel ...` command in the foreground: the stream worker, the ingest API,
the gateway, the hot-swap controller, the drift monitor, the alert receiver and the
trainer's watch loop. The parent hands its exact settings to each child as JSON (see
`deploy.settings.settings_to_json`), so every process sees the same ports and paths.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from deploy.local.service import (
    Health,
    LaunchSpec,
    PortSpec,
    Service,
    http_health,
    metric_health,
)
from deploy.settings import SETTINGS_ENV, env_var_for, settings_to_json

if TYPE_CHECKING:
    from deploy.settings import FlywheelSettings


@dataclass(frozen=True)
class AppSpec:
    """How to run and check one Flywheel process."""

    name: str
    args: tuple[str, ...]
    health_path: str | None
    port_field: tuple[str, str] | None
    startup_timeout_s: float = 120.0
    #: A gauge at `health_path` that must read 1 (a Prometheus endpoint answers long
    #: before the process is ready); None: any 200 is healthy.
    ready_metric: str | None = None


#: In start order: the stream worker first (it creates nothing others need), the trainer
#: last (it is the slowest to import).
APPS: tuple[AppSpec, ...] = (
    # Healthy once its consumer is assigned and consuming (streams.worker.READY_METRIC).
    AppSpec("streams-worker", ("streams", "worker"), "/metrics", ("metrics", "port"),
            ready_metric="flywheel_streams_ready"),
    AppSpec("ingest", ("ingest", "serve"), "/healthz", ("ingest", "port")),
    AppSpec("alerts-receiver", ("alerts", "receiver"), "/healthz",
            ("monitoring", "receiver_port")),
    AppSpec("controller", ("inference", "controller"), None, None, startup_timeout_s=180.0),
    # /healthz is OK only once the controller has the live version loaded in Triton.
    AppSpec("gateway", ("gateway", "serve"), "/healthz", ("inference", "gateway_port"),
            startup_timeout_s=180.0),
    AppSpec("monitor", ("monitor", "run"), "/metrics", ("monitoring", "metrics_port")),
    AppSpec("trainer-watch", ("trainer", "watch"), None, None),
)


class AppService(Service):
    """One Flywheel command under supervision, started again by its keeper when it dies."""

    restart_on_exit = True

    def __init__(self, settings: FlywheelSettings, spec: AppSpec) -> None:
        super().__init__(settings)
        self.spec = spec
        self.name = spec.name
        self.startup_timeout_s = spec.startup_timeout_s

    @property
    def external(self) -> bool:
        return False

    def _port(self) -> tuple[str, int] | None:
        if self.spec.port_field is None:
            return None
        section, field = self.spec.port_field
        options = getattr(self.settings, section)
        host_field = "host" if field == "port" else field.replace("port", "host")
        host = getattr(options, host_field, None) or getattr(options, "host", "127.0.0.1")
        return str(host), int(getattr(options, field))

    @property
    def address(self) -> str:
        port = self._port()
        return f"http://{port[0]}:{port[1]}" if port else "-"

    def ports(self) -> list[PortSpec]:
        port = self._port()
        if port is None or self.spec.port_field is None:
            return []
        return [PortSpec(port[0], port[1], env_var_for(self.spec.port_field))]

    def check_health(self) -> Health:
        if self.spec.health_path is None:
            # No endpoint of its own: alive is all a supervisor can tell.
            return Health(True, "running (no health endpoint)")
        if self.spec.ready_metric is not None:
            return metric_health(self.address + self.spec.health_path, self.spec.ready_metric)
        return http_health(self.address + self.spec.health_path)

    def launch_spec(self) -> LaunchSpec:
        return LaunchSpec(
            [sys.executable, "-m", "deploy.cli", *self.spec.args],
            env={SETTINGS_ENV: settings_to_json(self.settings)},
        )


def build_apps(settings: FlywheelSettings, names: list[str] | None = None) -> list[Service]:
    """The Flywheel processes (all, or those named), in start order."""
    chosen = [spec for spec in APPS if names is None or spec.name in names]
    return [AppService(settings, spec) for spec in chosen]
