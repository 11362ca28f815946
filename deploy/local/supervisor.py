"""Start, check and stop the services of the local stack as supervised processes.

Each local service runs in its own session (process group) with its output appended to
`<state_dir>/logs/<name>.log` and its pid recorded in `<state_dir>/run/<name>.pid`
together with the process start time, so a recycled pid is never mistaken for ours.
There is no daemon: `up` starts what is missing or dead, `status` reports, `down` stops.
A service with `restart_on_exit` (every Flywheel process) runs under a keeper
(`deploy.local.keeper`) that starts it again, with backoff, whenever it dies; its
restarts show in `status` and in the keeper's metrics file.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploy.errors import PortInUseError, StackError
from deploy.local.keeper import KeeperState
from deploy.local.service import Health, Service, port_is_listening

logger = logging.getLogger(__name__)

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ServiceStatus:
    """One row of `flywheel stack status`."""

    name: str
    pid: int | None
    address: str
    external: bool
    running: bool
    healthy: bool
    detail: str


ProgressCallback = Callable[[str, str], None]


def _noop(_service: str, _message: str) -> None:
    return None


def _process_start_ticks(pid: int) -> int | None:
    """The start time of a process in clock ticks since boot, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in field 2 may contain spaces; fields after it are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


class Supervisor:
    """Runs a fixed list of services under one state folder."""

    def __init__(
        self,
        services: Sequence[Service],
        *,
        stop_timeout_s: float = 30.0,
    ) -> None:
        self.services = list(services)
        self.stop_timeout_s = stop_timeout_s

    def get(self, name: str) -> Service:
        """The service called `name`.

        Raises:
            StackError: there is no such service.
        """
        for service in self.services:
            if service.name == name:
                return service
        known = ", ".join(s.name for s in self.services)
        raise StackError(f"no service called {name!r}; the stack has: {known}")

    # -- pid bookkeeping -------------------------------------------------------------

    def pid_of(self, service: Service) -> int | None:
        """The pid of the service's live process, or None when it is not running."""
        try:
            pid_text, ticks_text = service.pid_path.read_text().split()
            pid, ticks = int(pid_text), int(ticks_text)
        except (OSError, ValueError):
            return None
        if _process_start_ticks(pid) != ticks:
            return None
        return pid

    def _record_pid(self, service: Service, pid: int) -> None:
        service.pid_path.parent.mkdir(parents=True, exist_ok=True)
        ticks = _process_start_ticks(pid)
        service.pid_path.write_text(f"{pid} {ticks}\n")

    # -- status ----------------------------------------------------------------------

    def status_of(self, service: Service) -> ServiceStatus:
        if service.external:
            health = service.check_health()
            return ServiceStatus(
                service.name, None, service.address, True, health.healthy, health.healthy,
                f"external: {health.detail}",
            )
        pid = self.pid_of(service)
        if pid is None:
            return ServiceStatus(
                service.name, None, service.address, False, False, False,
                "not running" + self._last_exit_hint(service),
            )
        health = service.check_health()
        detail = health.detail
        keeper = self.keeper_of(service)
        if keeper is not None and keeper.restarts:
            detail += (f"; restarted {keeper.restarts} times, last exit code "
                       f"{keeper.last_exit_code} (see {service.log_path})")
        return ServiceStatus(
            service.name, pid, service.address, False, True, health.healthy, detail
        )

    @staticmethod
    def keeper_of(service: Service) -> KeeperState | None:
        """What the keeper of a `restart_on_exit` service saw, or None."""
        return KeeperState.read(service.keeper_path) if service.restart_on_exit else None

    def status(self) -> list[ServiceStatus]:
        return [self.status_of(s) for s in self.services]

    @staticmethod
    def _last_exit_hint(service: Service) -> str:
        if service.pid_path.exists():
            return f" (it died; see {service.log_path})"
        return ""

    # -- prepare / up ----------------------------------------------------------------

    def prepare(
        self, names: Iterable[str] | None = None, *, progress: ProgressCallback = _noop
    ) -> None:
        """Install and initialise what local services need, without starting them.

        Raises:
            StackError: a service's prerequisites are missing and cannot be installed.
        """
        selected = [self.get(n) for n in names] if names else self.services
        for service in selected:
            if not service.external:
                progress(service.name, "preparing")
                service.prepare()
                progress(service.name, "prepared")

    def up(
        self,
        names: Iterable[str] | None = None,
        *,
        progress: ProgressCallback = _noop,
    ) -> list[ServiceStatus]:
        """Bring services up and wait until each is healthy; idempotent.

        Raises:
            PortInUseError: a port is taken by a process that is not ours.
            StackError: a service failed to prepare, exited, or stayed unhealthy.
        """
        selected = [self.get(n) for n in names] if names else self.services
        to_wait: list[tuple[Service, subprocess.Popen[bytes] | None]] = []
        for service in selected:
            if service.external:
                progress(service.name, "external, checking health")
                to_wait.append((service, None))
                continue
            if self.pid_of(service) is not None:
                progress(service.name, "already running")
                to_wait.append((service, None))
                continue
            self._check_ports(service)
            progress(service.name, "preparing")
            service.prepare()
            progress(service.name, "starting")
            to_wait.append((service, self._launch(service)))
        for service, process in to_wait:
            progress(service.name, "waiting until healthy")
            self._wait_healthy(service, process)
            progress(service.name, "healthy")
        return [self.status_of(s) for s in selected]

    def _check_ports(self, service: Service) -> None:
        for spec in service.ports():
            if port_is_listening(spec.host, spec.port):
                raise PortInUseError(
                    port=spec.port, host=spec.host, setting=spec.setting, service=service.name
                )

    def _launch(self, service: Service) -> subprocess.Popen[bytes]:
        spec = service.launch_spec()
        argv = spec.argv
        if service.restart_on_exit:
            service.keeper_path.unlink(missing_ok=True)  # a fresh count for a fresh start
            argv = [sys.executable, "-m", "deploy.local.keeper", "--name", service.name,
                    "--state", str(service.keeper_path), "--", *argv]
        service.state_dir.mkdir(parents=True, exist_ok=True)
        service.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **spec.env}
        logger.info("starting %s: %s", service.name, " ".join(spec.argv))
        with service.log_path.open("ab") as log:
            log.write(f"\n--- flywheel: starting {service.name} at {time.ctime()} ---\n".encode())
            log.flush()
            try:
                process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=spec.cwd or service.state_dir,
                    env=env,
                    start_new_session=True,
                )
            except OSError as e:
                raise StackError(f"could not start {service.name} ({spec.argv[0]}): {e}") from e
        self._record_pid(service, process.pid)
        return process

    def _wait_healthy(
        self, service: Service, process: subprocess.Popen[bytes] | None
    ) -> Health:
        deadline = time.monotonic() + service.startup_timeout_s
        health = Health(False, "not checked yet")
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise StackError(
                    f"{service.name} exited with code {process.returncode} while starting. "
                    f"Last lines of {service.log_path}:\n{tail(service.log_path, 15)}"
                )
            if process is None and not service.external and self.pid_of(service) is None:
                raise StackError(f"{service.name} died; see {service.log_path}")
            keeper = self.keeper_of(service) if process is not None else None
            if keeper is not None and keeper.restarts and process is not None:
                # It died before it was ever healthy: a crash loop, not a blip to ride out.
                self._stop(service, process.pid)
                service.pid_path.unlink(missing_ok=True)
                raise StackError(
                    f"{service.name} exited with code {keeper.last_exit_code} while "
                    f"starting. Last lines of {service.log_path}:\n"
                    f"{tail(service.log_path, 15)}"
                )
            health = service.check_health()
            if health.healthy:
                return health
            time.sleep(0.25)
        raise StackError(
            f"{service.name} did not become healthy within {service.startup_timeout_s:.0f} s "
            f"({health.detail}). See {service.log_path}."
        )

    # -- down ------------------------------------------------------------------------

    def down(
        self, names: Iterable[str] | None = None, *, progress: ProgressCallback = _noop
    ) -> None:
        """Stop local services (in reverse start order) and leave no process behind."""
        selected = [self.get(n) for n in names] if names else self.services
        for service in reversed(selected):
            if service.external:
                continue
            pid = self.pid_of(service)
            if pid is not None:
                progress(service.name, f"stopping pid {pid}")
                self._stop(service, pid)
                progress(service.name, "stopped")
            service.pid_path.unlink(missing_ok=True)

    def _stop(self, service: Service, pid: int) -> None:
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + self.stop_timeout_s
        while time.monotonic() < deadline:
            if not _group_alive(pid):
                return
            time.sleep(0.1)
        logger.warning("%s did not stop within %.0f s; killing it", service.name,
                       self.stop_timeout_s)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        while _group_alive(pid):
            time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    """True while any process of the group is alive (zombies of ours are reaped first)."""
    try:
        while True:
            reaped, _ = os.waitpid(-pgid, os.WNOHANG)
            if reaped == 0:
                break
    except ChildProcessError:
        pass
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg succeeds on a group made only of zombies not ours to reap; look closer.
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def tail(path: Path, lines: int) -> str:
    """The last lines of a text file, or a note that it does not exist."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode(errors="replace")
    except OSError:
        return f"({path} does not exist)"
    return "\n".join(data.splitlines()[-lines:])
