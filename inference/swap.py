"""Bringing a version up and switching traffic to it, with Triton's explicit model control.

The sequence for a swap from live version A to B:

1. config.pbtxt's version_policy becomes [A, B] and `load_model` is sent over gRPC:
   Triton loads B beside A, leaving A serving (a failed load leaves A untouched).
2. B must be ready, then answer `warmup_requests` real requests.
3. routing.json names B live (the gateway rereads it within its poll interval).
4. After `drain_s`, the policy becomes [B] and `load_model` unloads A; requests already
   running on A finish (Triton's documented semantics).

A failure at 1 or 2 puts the policy back to [A] and sends an `Alert`; traffic never
moves to B. One torch thread per instance keeps the load from starving serving on a
small CPU (FINDINGS.md).
"""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from deploy.settings import FlywheelSettings
from inference.client import GenerationOptions, TritonChat
from inference.errors import InferenceError, SwapError, TritonUnavailableError
from inference.repository import (
    ensure_model,
    read_metadata,
    set_loaded_versions,
    versions,
)
from inference.routing import Routing, read_routing, write_routing
from schemas import Alert, Severity

logger = logging.getLogger(__name__)

WARMUP_PROMPT = "user: hello, can you help me?\nassistant:"
ALERT_SWAP_FAILED = "FlywheelModelSwapFailed"

AlertSink = Callable[[Alert], None]


@dataclass(frozen=True)
class SwapResult:
    """What a swap did and how long its steps took."""

    model: str
    previous: int
    live: int
    load_s: float
    warmup_s: float
    total_s: float


class SwapController:
    """Loads, warms, switches and unloads versions of one model on one Triton."""

    def __init__(
        self, settings: FlywheelSettings, *, model: str | None = None,
        repo: Path | None = None, alert_sink: AlertSink | None = None,
    ) -> None:
        self.settings = settings
        self.model = model or settings.model.name
        self.repo = repo or settings.triton_model_repository()
        self._alert_sink = alert_sink

    # -- public operations ------------------------------------------------------------

    def start(self, *, base_model: Path | None = None) -> Routing:
        """Make sure the model exists and its live version is loaded and routed.

        Raises:
            SwapError: the live version cannot be loaded.
            TritonUnavailableError: Triton cannot be reached.
        """
        inference = self.settings.inference
        ensure_model(
            self.repo, self.model, base_model=base_model or self.settings.base_model_path(),
            max_batch_size=inference.max_batch_size,
            max_queue_delay_us=inference.max_queue_delay_us,
            instance_count=inference.instance_count, device=inference.device,
            torch_threads=inference.torch_threads,
        )
        with self._lock():
            routing = read_routing(self.repo, self.model) or Routing()
            routing = replace(routing, canary=None, canary_share=0.0)
            set_loaded_versions(self.repo, self.model, [routing.live])
            self._load(routing.live)
            return write_routing(self.repo, self.model, routing)

    def deploy(
        self, version: int, *, reason: str = "deploy", history: list[int] | None = None
    ) -> SwapResult:
        """Swap traffic to `version` (load, ready, warm up, switch, unload the old one).

        Raises:
            SwapError: the version is unknown, failed to load or to warm up; the old
                version keeps serving and an alert was sent.
            TritonUnavailableError: Triton cannot be reached.
        """
        started = time.perf_counter()
        with self._lock():
            routing = read_routing(self.repo, self.model) or Routing()
            old = routing.live
            if version == old:
                logger.info("%s version %s is already live", self.model, version)
                return SwapResult(self.model, old, version, 0.0, 0.0, 0.0)
            if version not in versions(self.repo, self.model):
                self.reject(version, old, f"version {version} is not in {self.repo / self.model}",
                           reason)
            set_loaded_versions(self.repo, self.model, [old, version])
            t0 = time.perf_counter()
            try:
                self._load(version)
            except SwapError as e:
                self._restore(old)
                self.reject(version, old, str(e), reason)
            load_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            try:
                self.warm_up(version)
            except InferenceError as e:
                self._restore(old)
                self.reject(version, old, f"warm-up failed: {e}", reason)
            warmup_s = time.perf_counter() - t1
            # `history` lists the versions live before, oldest first; a rollback pops it.
            after = [*routing.history, old][-20:] if history is None else history
            write_routing(self.repo, self.model, Routing(
                live=version, previous=after[-1] if after else None, history=after))
            time.sleep(self.settings.inference.drain_s)
            self._restore(version)
        total_s = time.perf_counter() - started
        logger.info("%s: %s -> %s (%s) load %.1f s, warm-up %.2f s, total %.1f s", self.model,
                    old, version, reason, load_s, warmup_s, total_s)
        return SwapResult(self.model, old, version, load_s, warmup_s, total_s)

    def rollback(self) -> SwapResult:
        """Swap back to the version served before the live one.

        Raises:
            SwapError: there is no previous version, or it fails to come back up.
        """
        routing = read_routing(self.repo, self.model) or Routing()
        if routing.previous is None:
            raise SwapError(f"{self.model} has no previous version to roll back to; "
                            "use `flywheel models promote VERSION`")
        history = routing.history or [routing.previous]
        return self.deploy(history[-1], reason="rollback", history=history[:-1])

    def warm_up(self, version: int) -> None:
        """Send real requests to a loaded version.

        Raises:
            InferenceError: one of them failed.
        """
        inference = self.settings.inference
        options = GenerationOptions(max_new_tokens=min(8, inference.max_new_tokens))
        with TritonChat(self.settings.triton.grpc_address, model=self.model,
                        timeout_s=inference.request_timeout_s) as chat:
            for _ in range(inference.warmup_requests):
                chat.complete(WARMUP_PROMPT, version=version, options=options)

    def status(self) -> list[dict[str, object]]:
        """Every version with its metadata, routing role and Triton state."""
        routing = read_routing(self.repo, self.model) or Routing()
        states: dict[str, str] = {}
        try:
            with closing(grpcclient.InferenceServerClient(self.settings.triton.grpc_address)) as c:
                for entry in c.get_model_repository_index(as_json=True).get("models", []):
                    if entry.get("name") == self.model and entry.get("version"):
                        states[entry["version"]] = entry.get("state", "")
        except InferenceServerException as e:
            logger.warning("Triton unreachable for status: %s", e)
        rows: list[dict[str, object]] = []
        for version in versions(self.repo, self.model):
            meta = read_metadata(self.repo, self.model, version)
            role = ("live" if version == routing.live else
                    "canary" if version == routing.canary else
                    "previous" if version == routing.previous else "")
            rows.append({"version": version, "adapter_id": meta.get("adapter_id"),
                         "created_at": meta.get("created_at"), "role": role,
                         "triton_state": states.get(str(version), "UNLOADED")})
        return rows

    # -- steps --------------------------------------------------------------------------

    def _load(self, version: int) -> None:
        timeout_s = self.settings.inference.load_timeout_s
        try:
            with closing(grpcclient.InferenceServerClient(self.settings.triton.grpc_address)) as c:
                c.load_model(self.model, client_timeout=timeout_s)
                deadline = time.monotonic() + timeout_s
                while not c.is_model_ready(self.model, str(version)):
                    if time.monotonic() > deadline:
                        raise SwapError(f"version {version} not ready after {timeout_s:.0f} s")
                    time.sleep(0.1)
        except InferenceServerException as e:
            message = e.message() or str(e)
            if "failed to connect" in message.lower() or "UNAVAILABLE" in str(e.status()):
                raise TritonUnavailableError(
                    f"Triton at {self.settings.triton.grpc_address} is unreachable: {message}"
                ) from e
            raise SwapError(f"Triton could not load version {version}: {message}") from e

    def _restore(self, version: int) -> None:
        """Make `version` the only loaded one (unloads the others)."""
        set_loaded_versions(self.repo, self.model, [version])
        try:
            self._load(version)
        except (SwapError, TritonUnavailableError) as e:
            logger.error("could not unload other versions of %s: %s", self.model, e)

    def reject(self, version: int, live: int, detail: str, reason: str) -> None:
        summary = f"{self.model} version {version} was not deployed ({reason}): {detail}"
        logger.error("%s; version %s keeps serving", summary, live)
        self.emit(Alert(
            name=ALERT_SWAP_FAILED, status="firing", severity=Severity.CRITICAL,
            summary=summary[:1000],
            description=f"Version {live} keeps serving. Check the version folder "
            f"{self.repo / self.model / str(version)} and Triton's log, then republish.",
            labels={"model": self.model, "version": str(version), "live_version": str(live)},
        ))
        raise SwapError(f"{summary}; version {live} keeps serving")

    def emit(self, alert: Alert) -> None:
        if self._alert_sink is None:
            return
        try:
            self._alert_sink(alert)
        except Exception:  # noqa: BLE001 - an alert failure must not hide the swap failure
            logger.exception("could not send alert %s", alert.name)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """One swap at a time per model (the controller and on-call CLI may race)."""
        path = self.repo / self.model / ".swap.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
