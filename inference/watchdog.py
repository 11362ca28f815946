"""Serve the live version again whenever Triton has lost it, and say so while it has.

In explicit model-control mode a restarted tritonserver (kill -9, out of memory, the
supervisor's restart, `flywheel stack up triton`) comes back ready but with no model
loaded, so every chat answers 503 "unknown model" until something loads the live version.
The controller runs a `ServingWatchdog` beside its consumer: every
`inference.serving_check_interval_s` it asks Triton whether the model is ready and, when
it is not, calls `SwapController.restore()`, which takes the swap lock (never in the
middle of a swap) and loads the version routing.json names live.

While the model is not ready a `FlywheelModelNotServing` alert fires (critical), and it
is resolved once the model answers again, so on-call sees the outage even when it heals
by itself.
"""

from __future__ import annotations

import logging
import threading
import time

from inference import model_control
from inference.errors import InferenceError, TritonUnavailableError
from inference.routing import Routing, read_routing
from inference.swap import SwapController, runbook_url
from schemas import Alert, Severity

logger = logging.getLogger(__name__)

ALERT_NOT_SERVING = "FlywheelModelNotServing"
#: While the model stays down, the firing alert is raised again this often, so that it
#: outlives Alertmanager's hold and carries the newest reason.
REFIRE_S = 60.0


class ServingWatchdog:
    """Watches one model's readiness on Triton and restores it; `run` loops until stopped."""

    def __init__(self, controller: SwapController, *, interval_s: float | None = None) -> None:
        self.controller = controller
        self.interval_s = interval_s or controller.settings.inference.serving_check_interval_s
        self._down_since: float | None = None
        self._alert: Alert | None = None
        self._alerted_at = 0.0
        self._last_error = ""
        self.restores = 0
        """How many times the live version was loaded again (for tests and logs)."""

    def check_once(self) -> bool:
        """One check: restore the model if it is not ready. Returns whether it serves now.

        Never raises: a Triton still down is retried at the next check.
        """
        settings = self.controller.settings
        if model_control.is_ready(settings.triton.grpc_address, self.controller.model):
            self._resolve()
            return True
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            logger.error("%s is not ready on Triton at %s; loading the live version again",
                         self.controller.model, settings.triton.grpc_address)
            self._fire("the model is not loaded (did Triton restart?)", now)
        try:
            loaded = self.controller.restore()
        except TritonUnavailableError as e:
            self._fire(f"Triton at {settings.triton.grpc_address} is unreachable: {e}", now)
            return False
        except InferenceError as e:  # a SwapError: the live version failed to load
            self._fire(f"loading the live version failed: {e}", now)
            return False
        if loaded is not None:
            self.restores += 1
        self._resolve()
        return True

    def run(self, stop: threading.Event) -> None:
        """Check every `interval_s` until `stop` is set."""
        while not stop.wait(self.interval_s):
            try:
                self.check_once()
            except Exception:  # noqa: BLE001 - the watchdog must outlive any surprise
                logger.exception("serving watchdog of %s: unexpected error",
                                 self.controller.model)

    def start(self, stop: threading.Event) -> threading.Thread:
        """Run in a daemon thread named after the model; returns the thread."""
        thread = threading.Thread(target=self.run, args=(stop,), daemon=True,
                                  name=f"serving-watchdog-{self.controller.model}")
        thread.start()
        return thread

    # -- alerts -----------------------------------------------------------------------

    def _live(self) -> int:
        routing = read_routing(self.controller.repo, self.controller.model) or Routing()
        return routing.live

    def _fire(self, detail: str, now: float) -> None:
        if detail != self._last_error:
            logger.warning("%s still not serving: %s", self.controller.model, detail)
            self._last_error = detail
        if self._alert is not None and now - self._alerted_at < REFIRE_S:
            return
        model, live = self.controller.model, self._live()
        down_s = now - (self._down_since or now)
        alert = Alert(
            name=ALERT_NOT_SERVING, status="firing", severity=Severity.CRITICAL,
            summary=f"{model} is not serving: Triton has no ready model (version {live} "
            f"should be live), for {down_s:.0f} s",
            description=f"Every chat request answers 503. The controller retries loading "
            f"version {live} every {self.interval_s:g} s; last error: {detail}"[:10_000],
            runbook_url=runbook_url(ALERT_NOT_SERVING),
            labels={"model": model, "live_version": str(live)},
        )
        if self._alert is not None:  # the same alert: keep its start time
            alert = alert.model_copy(update={"starts_at": self._alert.starts_at})
        self._alert, self._alerted_at = alert, now
        self.controller.emit(alert)

    def _resolve(self) -> None:
        if self._down_since is None:
            return
        down_s = time.monotonic() - self._down_since
        logger.warning("%s serves again after %.1f s", self.controller.model, down_s)
        if self._alert is not None:
            self.controller.emit(self._alert.model_copy(update={
                "status": "resolved", "ends_at": None,
                "summary": f"{self.controller.model} serves again after {down_s:.0f} s"}))
        self._down_since, self._alert, self._last_error = None, None, ""
