"""Ctrl-C during `flywheel demo` stops the traffic, the services and the stack.

The demo runs as the CLI runs it, in its own session on a stack of its own (ports and
state folder apart from the session's test stack, which the interrupt would otherwise
take down). Once its services answer and simulated users are sending traffic, SIGINT
goes to the demo's whole process group, as a terminal's Ctrl-C does. The command must
exit with 130 and leave no process that belongs to its state folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.settings import SETTINGS_ENV, FlywheelSettings, settings_to_json
from tests.conftest import make_test_settings

# Apart from the session stack's ports (default + offset); no two default ports differ by it.
EXTRA_OFFSET = 700


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def processes_of(state_dir: Path) -> dict[int, str]:
    """Live processes whose command line or environment names the state folder."""
    needle = str(state_dir).encode()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # gone, or not ours
        if state != "Z" and (needle in cmdline or needle in environ):
            found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")[:120]
    return found


def wait_for(what: str, condition, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the demo exited with {proc.returncode} before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout_s:.0f} s")
        time.sleep(1.0)


@pytest.mark.e2e
@pytest.mark.slow
def test_ctrl_c_mid_run_stops_every_process_the_demo_started(
    settings: FlywheelSettings, tmp_path_factory: pytest.TempPathFactory,
    pytestconfig: pytest.Config,
) -> None:
    from deploy.local.stack import build_apps_supervisor, build_stack

    state_dir = tmp_path_factory.mktemp("demo-interrupt-state")
    own = make_test_settings(
        state_dir, port_offset=pytestconfig.getoption("--stack-port-offset") + EXTRA_OFFSET,
        # The quick base model is built once per cache folder; share the session's.
        cache_dir=settings.cache_dir)
    log_path = state_dir / "demo-output.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deploy.cli", "demo", "--quick", "--down"],
            env={**os.environ, SETTINGS_ENV: settings_to_json(own)},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            # A shell without job control starts background commands (CI's, say) with
            # SIGINT ignored, which children inherit, and Python then installs no
            # KeyboardInterrupt handler. In a terminal, Ctrl-C reaches the demo.
            preexec_fn=_default_sigint)
    apps = build_apps_supervisor(own)
    try:
        gateway = apps.get("gateway")
        wait_for("gateway serving version 1", lambda: apps.pid_of(gateway) is not None
                 and gateway.check_health().healthy, 300, proc)
        # The users send traffic once version 1 answers; let them, and the services, run.
        time.sleep(10)
        assert proc.poll() is None, log_path.read_text(errors="replace")[-2000:]
        started = processes_of(state_dir)
        assert len(started) >= 8  # Kafka, ClickHouse, Triton, Prometheus, ... and the apps

        os.killpg(proc.pid, signal.SIGINT)
        returncode = proc.wait(timeout=180)
        output = log_path.read_text(errors="replace")
        assert returncode == 130, output[-2000:]
        assert "interrupted" in output
        left: dict[int, str] = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            left = processes_of(state_dir)
            if not left:
                break
            time.sleep(0.5)
        assert left == {}, f"still running after Ctrl-C: {left}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        apps.down()
        build_stack(own).down()
