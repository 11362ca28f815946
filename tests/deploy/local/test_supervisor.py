"""The supervisor against real child processes (a tiny HTTP server stands in for a service)."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.errors import PortInUseError, StackError
from deploy.local.keeper import KeeperState, backoff_s
from deploy.local.service import Health, LaunchSpec, PortSpec, Service, http_health
from deploy.local.supervisor import Supervisor, _group_alive
from deploy.settings import FlywheelSettings
from tests.deploy.local.polling import wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HttpService(Service):
    """A real process: python's http.server, plus a child that shares its process group."""

    name = "web"
    startup_timeout_s = 20.0

    def __init__(self, settings: FlywheelSettings, *, port: int, crash: bool = False) -> None:
        super().__init__(settings)
        self.port = port
        self.crash = crash

    @property
    def external(self) -> bool:
        return False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ports(self) -> list[PortSpec]:
        return [PortSpec("127.0.0.1", self.port, "FLYWHEEL_TEST__PORT")]

    def launch_spec(self) -> LaunchSpec:
        if self.crash:
            return LaunchSpec([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"])
        script = (
            "import subprocess, sys;"
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']);"
            f"import http.server as h; h.test(h.SimpleHTTPRequestHandler, port={self.port},"
            " bind='127.0.0.1')"
        )
        return LaunchSpec([sys.executable, "-c", script])

    def check_health(self) -> Health:
        return http_health(f"http://127.0.0.1:{self.port}/", timeout_s=0.5)


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Supervisor]:
    settings = FlywheelSettings(state_dir=tmp_path)
    sup = Supervisor([HttpService(settings, port=_free_port())], stop_timeout_s=5)
    yield sup
    sup.down()


def test_up_starts_the_service_and_waits_until_healthy(supervisor: Supervisor) -> None:
    rows = supervisor.up()
    assert rows[0].healthy and rows[0].pid is not None
    assert (supervisor.services[0].log_path).exists()


def test_up_is_idempotent_and_keeps_the_running_process(supervisor: Supervisor) -> None:
    first = supervisor.up()[0].pid
    second = supervisor.up()[0].pid
    assert first == second


def test_status_shows_a_dead_service_and_up_restarts_it(supervisor: Supervisor) -> None:
    pid = supervisor.up()[0].pid
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    while _group_alive(pid):
        time.sleep(0.05)
    row = supervisor.status()[0]
    assert not row.running and not row.healthy
    assert "died" in row.detail
    restarted = supervisor.up()[0]
    assert restarted.healthy and restarted.pid != pid


def test_down_leaves_no_process_of_the_group_behind(supervisor: Supervisor) -> None:
    pid = supervisor.up()[0].pid
    assert pid is not None and _group_alive(pid)
    supervisor.down()
    assert not _group_alive(pid)
    assert supervisor.status()[0].pid is None


def test_port_taken_by_another_process_names_the_port_and_setting(
    supervisor: Supervisor,
) -> None:
    service = supervisor.services[0]
    assert isinstance(service, HttpService)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", service.port))
        squatter.listen()
        with pytest.raises(PortInUseError) as info:
            supervisor.up()
    assert str(service.port) in str(info.value)
    assert "FLYWHEEL_TEST__PORT" in str(info.value)


def test_a_service_that_exits_while_starting_reports_its_log(tmp_path: Path) -> None:
    settings = FlywheelSettings(state_dir=tmp_path)
    sup = Supervisor([HttpService(settings, port=_free_port(), crash=True)])
    with pytest.raises(StackError, match="exited with code 3") as info:
        sup.up()
    assert "boom" in str(info.value)


def test_unknown_service_name_lists_the_known_ones(supervisor: Supervisor) -> None:
    with pytest.raises(StackError, match="the stack has: web"):
        supervisor.get("nope")


class KeptHttpService(HttpService):
    """The same server, run under a keeper that starts it again when it dies."""

    restart_on_exit = True


@pytest.fixture
def kept(tmp_path: Path) -> Iterator[Supervisor]:
    settings = FlywheelSettings(state_dir=tmp_path)
    sup = Supervisor([KeptHttpService(settings, port=_free_port())], stop_timeout_s=5)
    yield sup
    sup.down()


def _keeper(sup: Supervisor) -> KeeperState:
    state = sup.keeper_of(sup.services[0])
    assert state is not None
    return state


def test_a_kept_service_killed_with_sigkill_is_started_again_and_counted(
    kept: Supervisor,
) -> None:
    keeper_pid = kept.up()[0].pid
    first = _keeper(kept).child_pid
    assert first is not None and first != keeper_pid
    os.kill(first, signal.SIGKILL)
    assert wait_for(lambda: (s := _keeper(kept)).restarts == 1 and s.child_pid not in
                    (None, first), timeout_s=20)
    assert wait_for(lambda: kept.status()[0].healthy, timeout_s=20)
    row = kept.status()[0]
    assert row.pid == keeper_pid  # nobody ran `up` again
    assert "restarted 1 times" in row.detail and "-9" in row.detail
    metrics = kept.services[0].keeper_path.with_suffix(".prom").read_text()
    assert 'flywheel_process_restarts_total{process="web"} 1' in metrics


def test_down_stops_a_kept_service_for_good(kept: Supervisor) -> None:
    pid = kept.up()[0].pid
    assert pid is not None
    kept.down()
    assert not _group_alive(pid)
    assert kept.status()[0].pid is None and _keeper(kept).restarts == 0


def test_a_kept_service_that_dies_while_starting_reports_its_exit_code(tmp_path: Path) -> None:
    settings = FlywheelSettings(state_dir=tmp_path)
    service = KeptHttpService(settings, port=_free_port(), crash=True)
    sup = Supervisor([service], stop_timeout_s=5)
    with pytest.raises(StackError, match="exited with code 3") as info:
        sup.up()
    assert "boom" in str(info.value)
    assert sup.status()[0].pid is None  # not left restarting in a loop


@pytest.mark.parametrize(("deaths", "expected_s"), [(1, 1.0), (2, 2.0), (3, 4.0), (6, 30.0),
                                                    (50, 30.0)])
def test_the_restart_backoff_doubles_with_each_quick_death_up_to_its_cap(
    deaths: int, expected_s: float,
) -> None:
    assert backoff_s(deaths, minimum_s=1.0, maximum_s=30.0) == expected_s
