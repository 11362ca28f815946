"""`python -m deploy.local.keeper --name N --state FILE -- CMD...`: keep one process running.

The local supervisor has no daemon (`deploy.local.supervisor`): `up` starts what is down
and returns. A Flywheel process that died (a crash, an OOM kill, `kill -9`) stayed dead
until someone ran `flywheel apps up` again. So each Flywheel process runs under a keeper,
the leader of its process group: the keeper starts the command, and when it exits
without being asked to, starts it again after a backoff that doubles with each quick
death (1 s, 2 s, ... up to 30 s) and resets once a run lasted `stable_s`.

The keeper writes what it saw to `FILE` (JSON: restarts, last exit code, child pid) and
the same as Prometheus text next to it (`FILE` with `.prom`), where `flywheel apps status`
and a textfile collector read the crash counter `flywheel_process_restarts_total`.
SIGTERM or SIGINT (`flywheel apps down` signals the whole group) stops the keeper: it
passes the signal on, waits for the command and exits with its code.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class KeeperState:
    """What the keeper of one process has seen, as written to its state file."""

    name: str
    child_pid: int | None = None
    restarts: int = 0
    last_exit_code: int | None = None
    last_exit_at: float | None = None
    started_at: float | None = None

    @classmethod
    def read(cls, path: Path) -> KeeperState | None:
        """The state in `path`, or None when there is none (yet) or it is unreadable."""
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def write(self, path: Path) -> None:
        """Write the JSON file and its Prometheus twin, each replaced atomically."""
        _replace(path, json.dumps(asdict(self)) + "\n")
        label = f'process="{self.name}"'
        lines = [
            "# HELP flywheel_process_restarts_total Times the supervisor restarted this "
            "Flywheel process after it died.",
            "# TYPE flywheel_process_restarts_total counter",
            f"flywheel_process_restarts_total{{{label}}} {self.restarts}",
            "# HELP flywheel_process_last_exit_code Exit code of the last death (negative: "
            "the signal).",
            "# TYPE flywheel_process_last_exit_code gauge",
            f"flywheel_process_last_exit_code{{{label}}} "
            f"{0 if self.last_exit_code is None else self.last_exit_code}",
        ]
        _replace(path.with_suffix(".prom"), "\n".join(lines) + "\n")


def _replace(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(text)
    os.replace(partial, path)


def backoff_s(quick_deaths: int, *, minimum_s: float, maximum_s: float) -> float:
    """The wait before the next start after `quick_deaths` deaths in a row (1 or more)."""
    return min(maximum_s, minimum_s * 2 ** max(0, quick_deaths - 1))


class Keeper:
    """Runs `argv` until stopped, starting it again whenever it exits on its own."""

    def __init__(self, argv: Sequence[str], *, name: str, state_path: Path,
                 backoff_min_s: float = 1.0, backoff_max_s: float = 30.0,
                 stable_s: float = 60.0) -> None:
        self._argv = list(argv)
        self._state_path = state_path
        self._backoff = (backoff_min_s, backoff_max_s)
        self._stable_s = stable_s
        self._stopping = threading.Event()
        self._child: subprocess.Popen[bytes] | None = None
        # Counts from 0 for each `apps up`, as any Prometheus counter does after a restart.
        self.state = KeeperState(name)

    def stop(self, *_: object) -> None:
        """Stop restarting; pass SIGTERM to the command (it may have had it already)."""
        self._stopping.set()
        child = self._child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    def run(self) -> int:
        """Keep the command running until `stop`; the command's last exit code."""
        quick_deaths = 0
        while True:
            started = time.monotonic()
            self._child = subprocess.Popen(self._argv, stdin=subprocess.DEVNULL)
            self.state.child_pid, self.state.started_at = self._child.pid, time.time()
            self.state.write(self._state_path)
            if self._stopping.is_set():  # a stop that came while it was starting
                self._child.send_signal(signal.SIGTERM)
            code = self._child.wait()
            if self._stopping.is_set():
                return code
            quick_deaths = 1 if time.monotonic() - started >= self._stable_s else quick_deaths + 1
            self.state.restarts += 1
            self.state.child_pid = None
            self.state.last_exit_code, self.state.last_exit_at = code, time.time()
            self.state.write(self._state_path)
            delay_s = backoff_s(quick_deaths, minimum_s=self._backoff[0],
                                maximum_s=self._backoff[1])
            _say(f"{self.state.name} exited with code {code}; starting it again in "
                 f"{delay_s:.0f} s (restart {self.state.restarts})")
            if self._stopping.wait(delay_s):
                return code


def _say(message: str) -> None:
    # The keeper writes to the process's own log (stdout), like the supervisor's banner.
    sys.stdout.write(f"--- flywheel keeper at {time.ctime()}: {message} ---\n")
    sys.stdout.flush()


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Keep one Flywheel process running")
    parser.add_argument("--name", required=True)
    parser.add_argument("--state", required=True, type=Path)
    parser.add_argument("--backoff-min-s", type=float, default=1.0)
    parser.add_argument("--backoff-max-s", type=float, default=30.0)
    parser.add_argument("--stable-s", type=float, default=60.0)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(list(argv) if argv is not None else None)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to keep running after --")
    keeper = Keeper(command, name=args.name, state_path=args.state,
                    backoff_min_s=args.backoff_min_s, backoff_max_s=args.backoff_max_s,
                    stable_s=args.stable_s)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, keeper.stop)
    code = keeper.run()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    raise SystemExit(main())
