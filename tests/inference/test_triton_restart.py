"""Triton killed under load: serving comes back with the same live version, no command.

The real stack's tritonserver is killed with SIGKILL while a trickle of chats goes through
the gateway. The supervisor's keeper (`deploy.local.keeper`, `TritonService.
restart_on_exit`) starts it again; where Triton runs without a keeper, the test starts it
again as `flywheel stack up triton` would. Nothing is sent to the controller or the
gateway: the controller's watchdog finds the model missing and loads the live version
again, and the gateway's /healthz answers 503 until it is back.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import tritonclient.grpc as grpcclient
from typer.testing import CliRunner

from deploy.cli import app
from deploy.errors import StackError
from deploy.local.supervisor import Supervisor
from deploy.settings import SETTINGS_ENV, FlywheelSettings, settings_to_json
from inference.controller import run_controller
from inference.gateway.server import gateway_in_thread
from inference.routing import read_routing
from inference.swap import SwapController
from inference.watchdog import ALERT_NOT_SERVING
from monitoring.alertmanager import AlertmanagerClient
from monitoring.status import gather_status
from streams.topics import CHAT_EVENTS, MODELS_PUBLISHED
from tests.inference.conftest import add_adapter_version

pytestmark = pytest.mark.integration

KEY = {"Authorization": "Bearer flywheel-dev-key"}
ASK = {"messages": [{"role": "user", "content": "are you there?"}], "max_tokens": 4}
#: Generous: "serving came back at all", not a speed claim (the figure is in BENCHMARKS.md).
BACK_WITHIN_S = 180.0


@dataclass
class Observed:
    """What the clients saw, with monotonic times."""

    chats: list[tuple[float, int, int | None]] = field(default_factory=list)
    health: list[tuple[float, int, dict[str, object]]] = field(default_factory=list)
    alert_names: set[str] = field(default_factory=set)


def _group_processes(pgid: int) -> list[tuple[int, str]]:
    """(pid, argv[0]) of the live processes of a process group."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            argv0 = (stat.parent / "cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append((int(stat.parent.name), argv0))
    return found


def tritonserver_pid(stack: Supervisor) -> tuple[int, bool]:
    """The tritonserver process, and whether a keeper (its group leader) restarts it."""
    leader = stack.pid_of(stack.get("triton"))
    assert leader is not None, "Triton is not running"
    members = _group_processes(leader)
    [pid] = [p for p, argv0 in members if argv0.endswith("/tritonserver")]
    return pid, pid != leader


def restart_when_dead(stack: Supervisor, *, stop: threading.Event) -> threading.Thread:
    """Start Triton again once its process is gone (for a Triton run without a keeper)."""
    service = stack.get("triton")

    def loop() -> None:
        while not stop.is_set():
            if stack.pid_of(service) is None:
                try:
                    stack.up(["triton"])
                except StackError as e:  # e.g. a port not yet free: retry, as a keeper does
                    listening = subprocess.run(["ss", "-ltnp"], capture_output=True,
                                               text=True, check=False).stdout
                    print(f"restart failed, retrying: {e}\n{listening}")
            stop.wait(0.5)

    thread = threading.Thread(target=loop, daemon=True, name="triton-restart")
    thread.start()
    return thread


@pytest.fixture
def served_model(
    running: Callable[..., Supervisor], swap_settings: FlywheelSettings, tiny_base: Path,
    tiny_adapter: Path,
) -> Iterator[tuple[str, int]]:
    """A model of this test with an adapter version live (not the base), and its version."""
    running("triton", "kafka", "alertmanager")
    name = f"restart-{uuid.uuid4().hex[:10]}"
    controller = SwapController(swap_settings, model=name)
    controller.start(base_model=tiny_base)
    version = add_adapter_version(swap_settings, name, tiny_base, tiny_adapter,
                                  adapter_id="adapter-restart")
    controller.deploy(version)
    try:
        yield name, version
    finally:
        with closing(grpcclient.InferenceServerClient(swap_settings.triton.grpc_address)) as c:
            try:
                c.unload_model(name)
            except Exception:  # noqa: BLE001 - best effort: Triton may have died
                pass
        shutil.rmtree(controller.repo / name, ignore_errors=True)


def test_after_triton_is_killed_the_live_version_serves_again_without_any_command(
    running: Callable[..., Supervisor], swap_settings: FlywheelSettings,
    served_model: tuple[str, int], topic: Callable[..., str],
) -> None:
    stack = running("triton", "kafka", "alertmanager")
    model, live = served_model
    stop_controller, stop_clients, stop_restart = (threading.Event() for _ in range(3))
    controller = threading.Thread(target=run_controller, args=(swap_settings,), kwargs={
        "stop": stop_controller, "model": model, "topic": topic(MODELS_PUBLISHED)})
    controller.start()
    seen = Observed()
    restarter: threading.Thread | None = None
    alertmanager = AlertmanagerClient(swap_settings.alertmanager.http_url)
    try:
        with gateway_in_thread(swap_settings, model=model,
                               chat_topic=topic(CHAT_EVENTS)) as url:
            def chats() -> None:
                with httpx.Client(base_url=url, headers=KEY, timeout=30) as http:
                    while not stop_clients.is_set():
                        response = http.post("/v1/chat/completions", json=ASK)
                        version = (response.json()["flywheel"]["version"]
                                   if response.status_code == 200 else None)
                        seen.chats.append((time.monotonic(), response.status_code, version))
                        stop_clients.wait(0.2)

            def health() -> None:
                with httpx.Client(base_url=url, timeout=10) as http:
                    while not stop_clients.is_set():
                        response = http.get("/healthz")
                        seen.health.append((time.monotonic(), response.status_code,
                                            response.json()))
                        try:
                            seen.alert_names |= {a.name for a in alertmanager.alerts()
                                                 if a.labels.get("model") == model}
                        except Exception:  # noqa: BLE001 - only what it saw matters
                            pass
                        stop_clients.wait(0.2)

            clients = [threading.Thread(target=f, daemon=True) for f in (chats, health)]
            for t in clients:
                t.start()
            deadline = time.monotonic() + 60
            while not any(s == 200 for _, s, _ in seen.chats) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert any(s == 200 for _, s, _ in seen.chats), f"no answer before: {seen.chats}"

            pid, kept = tritonserver_pid(stack)
            killed_at = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            if not kept:
                restarter = restart_when_dead(stack, stop=stop_restart)
            deadline = killed_at + BACK_WITHIN_S
            while time.monotonic() < deadline and not any(
                    t > killed_at and s == 200 for t, s, _ in seen.chats):
                time.sleep(0.1)
            back_at = min((t for t, s, _ in seen.chats if t > killed_at and s == 200),
                          default=None)
            # Let the health poller see the model back too, then stop the clients.
            time.sleep(1.0)
            stop_clients.set()
            for t in clients:
                t.join(30)
    finally:
        stop_clients.set()
        stop_restart.set()
        stop_controller.set()
        controller.join(60)
        if restarter is not None:
            restarter.join(150)

    assert back_at is not None, f"no answer within {BACK_WITHIN_S:.0f} s of the kill"
    print(f"\nkill -9 to the first answer: {back_at - killed_at:.1f} s "
          f"({'keeper' if kept else 'restarted by the test'})")
    after = [(s, v) for t, s, v in seen.chats if t > back_at]
    assert after and all(s == 200 and v == live for s, v in after), after
    assert {v for t, s, v in seen.chats if t >= back_at and s == 200} == {live}
    outage = [(s, body) for t, s, body in seen.health if killed_at < t < back_at]
    assert any(s == 503 and body["status"] == "not serving" and body["reason"]
               for s, body in outage), outage
    health_back = min((t for t, s, _ in seen.health if t > killed_at + 0.5 and s == 200),
                      default=back_at)
    print(f"kill -9 to /healthz ok: {health_back - killed_at:.1f} s")
    last_status, last_body = seen.health[-1][1:]
    assert (last_status, last_body["status"], last_body["live_version"]) == (200, "ok", live)
    assert read_routing(swap_settings.triton_model_repository(), model).live == live  # type: ignore[union-attr]
    assert ALERT_NOT_SERVING in seen.alert_names


def test_flywheel_status_says_not_serving_while_triton_has_no_ready_model(
    running: Callable[..., Supervisor], settings: FlywheelSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    running("triton")  # up, with no model of this name: what a restart leaves
    absent = settings.model_copy(update={
        "model": settings.model.model_copy(update={"name": f"absent-{uuid.uuid4().hex[:8]}"})})

    status = gather_status(absent)

    assert status.serving is not None and status.serving["state"] == "not serving"
    assert "has no ready" in status.serving["reason"]
    assert any(p.startswith(f"{absent.model.name} is not serving") for p in status.problems)
    monkeypatch.setenv(SETTINGS_ENV, settings_to_json(absent))
    shown = CliRunner().invoke(app, ["status"], env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    assert "not serving" in shown.output
