"""What every service of the local stack looks like to the supervisor.

A service is either *local* (the stack prepares it, starts it as a child process with
its data and log under `<state_dir>/<name>/`, and stops it) or *external* (settings point
at an existing server; the stack only checks its health).
"""

from __future__ import annotations

import abc
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from deploy.settings import FlywheelSettings


@dataclass(frozen=True)
class Health:
    """The answer of one health check."""

    healthy: bool
    detail: str


@dataclass(frozen=True)
class PortSpec:
    """A port a local service listens on, and the setting that chooses it."""

    host: str
    port: int
    setting: str


@dataclass
class LaunchSpec:
    """How to start a local service's process."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


class Service(abc.ABC):
    """One service of the stack; subclasses fill in how to prepare, launch and check it."""

    #: Short lowercase name, used for the state folder, logs and the CLI.
    name: str
    #: Seconds `up` waits for a fresh process to become healthy.
    startup_timeout_s: float = 120.0
    #: Run under a keeper that starts the process again when it dies (deploy.local.keeper).
    restart_on_exit: bool = False

    def __init__(self, settings: FlywheelSettings) -> None:
        self.settings = settings

    @property
    @abc.abstractmethod
    def external(self) -> bool:
        """True when settings point at a server the stack does not run."""

    @property
    @abc.abstractmethod
    def address(self) -> str:
        """Where clients reach the service, as shown by `flywheel stack status`."""

    @abc.abstractmethod
    def check_health(self) -> Health:
        """Ask the running service whether it is ready; must not raise."""

    def ports(self) -> list[PortSpec]:
        """Ports a local instance listens on (checked for conflicts before start)."""
        return []

    def prepare(self) -> None:
        """Install, download or initialise what the process needs; idempotent.

        Raises:
            StackError: something the service needs is missing and cannot be installed.
        """
        return None

    @abc.abstractmethod
    def launch_spec(self) -> LaunchSpec:
        """The command that runs a local instance in the foreground."""

    @property
    def state_dir(self) -> Path:
        return self.settings.state_path / self.name

    @property
    def log_path(self) -> Path:
        return self.settings.state_path / "logs" / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        return self.settings.state_path / "run" / f"{self.name}.pid"

    @property
    def keeper_path(self) -> Path:
        """The keeper's state (restarts, last exit code) when `restart_on_exit` is set."""
        return self.settings.state_path / "run" / f"{self.name}.keeper.json"


def port_is_listening(host: str, port: int, *, timeout_s: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def http_health(url: str, *, expect_status: int = 200, timeout_s: float = 2.0) -> Health:
    """GET a readiness URL; healthy when it answers with the expected status."""
    try:
        response = httpx.get(url, timeout=timeout_s)
    except httpx.HTTPError as e:
        return Health(False, f"{url}: {type(e).__name__}: {e}".strip(": "))
    if response.status_code != expect_status:
        return Health(False, f"{url} answered {response.status_code}: {response.text[:200]}")
    return Health(True, f"{url} ok")


def metric_health(url: str, metric: str, *, timeout_s: float = 2.0) -> Health:
    """Healthy when the Prometheus text at `url` has `metric` (unlabelled) at 1.

    For a process whose readiness is a state it reaches after start, not the start
    itself: the stream worker serves /metrics before its group assigned it partitions.
    """
    try:
        response = httpx.get(url, timeout=timeout_s)
    except httpx.HTTPError as e:
        return Health(False, f"{url}: {type(e).__name__}: {e}".strip(": "))
    if response.status_code != 200:
        return Health(False, f"{url} answered {response.status_code}")
    for line in response.text.splitlines():
        name, _, value = line.partition(" ")
        if name == metric:
            try:
                ready = float(value) == 1.0
            except ValueError:
                break
            return Health(ready, f"{url} ok" if ready else f"{metric} is {value.strip()}")
    return Health(False, f"{url} has no {metric} yet")
