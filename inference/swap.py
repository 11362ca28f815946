"""Bringing a version up and switching traffic to it, inside the serving model process.

The Triton model keeps its base model loaded and switches LoRA adapters in place
(`triton_model/model.py`): a swap to B is one control request, `{"op": "activate",
"version": B}`, to the serving model. Between two batches the instance reads B's
adapter, checks its hash, merges it into new weight tensors, points the model at them
and checks them with a forward pass (finite logits; the generation code is already warm
in that process); only then does it answer the control request, and every later batch
is B's.
Requests never wait on a new stub process, a second base load or a Triton reload, and
each answer carries the version that produced it. A version that fails (hash,
unreadable weights, check) is refused by the model, which keeps serving A, and an
`Alert` is sent.

The controller then writes `active_version.json`, which every instance rereads before
each batch, so a model with several instances all follow, and a model (re)loaded later
starts on the active version. config.pbtxt's `version_policy` only names the folder
Triton loads as the runtime (its model.py); it changes only when a version is on another
base model, which needs a full reload: then the old way applies (rewrite the policy,
`load_model`; Triton loads the new one beside the old, switches, unloads the old one).

A canary (`start_canary`) is loaded as a second Triton model, `<model>-canary` (one
load; the live model is not touched), and the gateway sends it a share of the traffic
until `end_canary` promotes it (an in-place switch of the live model to its version,
then the canary model is unloaded) or drops it.

After a switch, `model_versions` in ClickHouse records the new version as `serving` and
the old one as `retired` (`rolled_back` for a rollback), and a version that was not
deployed as `refused` with the reason; see `inference.serving_status`. That write is
bookkeeping: when it fails it is logged and the swap stands.

A Triton restart (explicit model control) comes back with no model loaded: `restore`
loads the live version again, and `inference.watchdog` calls it whenever the model is
not ready.
"""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from deploy.settings import FlywheelSettings
from inference import model_control
from inference.canary_model import canary_model_name, write_canary_model
from inference.client import ControlRefusedError, GenerationOptions, TritonChat
from inference.errors import (
    InferenceError,
    ServingStatusError,
    SwapError,
    TritonUnavailableError,
)
from inference.repository import (
    ensure_model,
    loaded_versions_in_config,
    read_metadata,
    set_loaded_versions,
    versions,
    write_active_version,
)
from inference.routing import Routing, read_routing, write_routing
from inference.serving_status import CANARY, ROLLED_BACK, ServingStatusWriter
from schemas import Alert, Severity

logger = logging.getLogger(__name__)

WARMUP_PROMPT = "user: hello, can you help me?\nassistant:"
#: How the model refuses a version on another base model (triton_model/model.py).
BASE_CHANGED = "base model differs"
ALERT_SWAP_FAILED = "FlywheelModelSwapFailed"
ALERT_CANARY_ROLLED_BACK = "FlywheelCanaryRolledBack"
#: The alerts this module raises; each has docs/runbooks/<name>.md.
ALERT_NAMES = (ALERT_SWAP_FAILED, ALERT_CANARY_ROLLED_BACK)

AlertSink = Callable[[Alert], None]


@dataclass(frozen=True)
class SwapResult:
    """What a swap did and how long its steps took.

    `load_s`: until the new version served (the in-place switch, or a full reload);
    `switch_ms`: the model's own time to read, merge and check the adapter (0 after a
    full reload); `warmup_s`: the check request after a full reload (none in place).
    """

    model: str
    previous: int
    live: int
    load_s: float
    warmup_s: float
    total_s: float
    switch_ms: float = 0.0


class SwapController:
    """Loads, warms, switches and unloads versions of one model on one Triton.

    `serving_status` records each switch in model_versions; by default it writes to the
    ClickHouse of `settings`.
    """

    def __init__(
        self, settings: FlywheelSettings, *, model: str | None = None,
        repo: Path | None = None, alert_sink: AlertSink | None = None,
        serving_status: ServingStatusWriter | None = None,
    ) -> None:
        self.settings = settings
        self.model = model or settings.model.name
        self.repo = repo or settings.triton_model_repository()
        self._alert_sink = alert_sink
        self.serving_status = serving_status or ServingStatusWriter(
            settings, model=self.model, repo=self.repo)

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
            torch_threads=inference.torch_threads, warmup_requests=inference.warmup_requests,
        )
        with self._lock():
            routing = read_routing(self.repo, self.model) or Routing()
            dropped = routing.canary
            if dropped is not None:  # a canary is not resumed after a restart
                logger.warning("%s: dropping canary version %s left by the last run",
                               self.model, dropped)
                self._unload(canary_model_name(self.model))
                self._record(lambda: self.serving_status.mark(dropped, ROLLED_BACK))
            routing = replace(routing, canary=None, canary_share=0.0)
            switched = False
            if self._runtime_ready():
                # Already serving (a controller restart): make sure it serves the live one.
                try:
                    self._activate(routing.live)
                    switched = True
                except ControlRefusedError as e:
                    raise SwapError(f"{self.model} could not switch back to its live version "
                                    f"{routing.live}: {e}") from e
                except SwapError as e:  # a model loaded from older code: reload it
                    logger.warning("%s takes no control request (%s); reloading it",
                                   self.model, e)
            write_active_version(self.repo, self.model, routing.live)
            if not switched:
                # Rewriting an unchanged config would make Triton reload the model.
                if loaded_versions_in_config(self.repo, self.model) != [routing.live]:
                    set_loaded_versions(self.repo, self.model, [routing.live])
                self._load(routing.live)
            routing = write_routing(self.repo, self.model, routing)
            self._record(lambda: self.serving_status.ensure_serving(routing.live))
            return routing

    def restore(self) -> int | None:
        """Load the live version again when Triton has lost the model (it restarted).

        Returns the version loaded, or None when the model was ready already. A canary
        the restart took down is dropped (`rolled_back`), as at a controller start.

        Raises:
            SwapError: the live version cannot be loaded.
            TritonUnavailableError: Triton cannot be reached.
        """
        if self._runtime_ready():
            return None
        with self._lock():  # a swap in flight finishes first; then look again
            if self._runtime_ready():
                return None
            routing = read_routing(self.repo, self.model) or Routing()
            dropped = routing.canary
            if dropped is not None:
                logger.warning("%s: Triton lost canary version %s too; dropping it",
                               self.model, dropped)
                self._unload(canary_model_name(self.model))
                routing = write_routing(self.repo, self.model,
                                        replace(routing, canary=None, canary_share=0.0))
                self._record(lambda: self.serving_status.mark(dropped, ROLLED_BACK))
            write_active_version(self.repo, self.model, routing.live)
            if loaded_versions_in_config(self.repo, self.model) != [routing.live]:
                set_loaded_versions(self.repo, self.model, [routing.live])
            started = time.perf_counter()
            self._load(routing.live)
            logger.warning("%s: Triton had no ready model; version %s loaded again in %.1f s",
                           self.model, routing.live, time.perf_counter() - started)
            self._record(lambda: self.serving_status.ensure_serving(routing.live))
            return routing.live

    def deploy(
        self, version: int, *, reason: str = "deploy", history: list[int] | None = None
    ) -> SwapResult:
        """Swap traffic to `version`: the serving model switches to its adapter in place.

        Raises:
            SwapError: the version is unknown or failed to load or warm up; the old
                version keeps serving, an alert was sent and model_versions says
                `refused`.
            TritonUnavailableError: Triton cannot be reached or has not got the model
                loaded (a restart); nothing is refused, deploy again once it serves.
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
            switch_ms, reloaded = 0.0, False
            try:
                switch_ms = float(self._activate(version).get("switch_ms", 0.0))
            except ControlRefusedError as e:
                if BASE_CHANGED not in str(e):
                    self.reject(version, old, str(e), reason)
                self._reload(version, old=old, reason=reason)
                reloaded = True
            except TritonUnavailableError:
                # Not the version's fault (Triton down, or restarted without the model):
                # the caller retries once the watchdog has the live version back.
                raise
            except SwapError as e:
                self.reject(version, old, str(e), reason)
            # Every other instance follows before its next batch; a reload starts on it.
            write_active_version(self.repo, self.model, version)
            load_s = time.perf_counter() - started
            # `history` lists the versions live before, oldest first; a rollback pops it.
            after = [*routing.history, old][-20:] if history is None else history
            write_routing(self.repo, self.model, Routing(
                live=version, previous=after[-1] if after else None, history=after))
            # Under the lock, so two racing swaps record in the order they switched.
            self._record(lambda: self.serving_status.record_switch(
                serving=version, replaced=old, reason=reason))
        if routing.canary is not None:  # the new routing has none: its model goes too
            self._drop_canary_model(routing.canary, promoted=routing.canary == version)
        t1 = time.perf_counter()
        # After an in-place switch the model's answer to the control request is the check
        # (merged weights verified in the serving process). An extra generation here is a
        # request of its own shape, generated as a group of its own inside a busy batch:
        # with it the bench's swap p99 ratio was 1.45x, without it 0.98x (one run each,
        # shared machine). A full reload started a fresh process: check that end to end.
        if reloaded:
            try:
                self.warm_up(version)
            except InferenceError as e:  # already serving: report, do not undo
                logger.warning("post-swap check of %s v%s failed: %s", self.model, version, e)
        total_s = time.perf_counter() - started
        logger.info("%s: %s -> %s (%s) switch %.2f s (in the model %.0f ms), total %.1f s",
                    self.model, old, version, reason, load_s, switch_ms, total_s)
        return SwapResult(self.model, old, version, load_s, time.perf_counter() - t1, total_s,
                          switch_ms)

    def start_canary(self, version: int, *, share: float) -> Routing:
        """Load `version` as the canary model and route `share` (0-1) of requests to it.

        Raises:
            SwapError: a canary is already running, the version is unknown or live, or
                it failed to load (an alert was sent; the live version serves everything).
            TritonUnavailableError: Triton cannot be reached.
        """
        if not 0 < share < 1:
            raise SwapError(f"a canary share is between 0 and 1 (exclusive), got {share}")
        canary = canary_model_name(self.model)
        with self._lock():
            routing = read_routing(self.repo, self.model) or Routing()
            if routing.canary is not None:
                raise SwapError(f"version {routing.canary} of {self.model} is already a canary; "
                                "end it first (`flywheel models promote` or `rollback`)")
            if version == routing.live:
                raise SwapError(f"version {version} of {self.model} is already live")
            if version not in versions(self.repo, self.model):
                self.reject(version, routing.live,
                            f"version {version} is not in {self.repo / self.model}", "canary")
            write_canary_model(self.repo, self.model, version)
            try:
                self._load(version, model=canary)
            except TritonUnavailableError:
                self._unload(canary)
                raise
            except SwapError as e:
                self._unload(canary)
                self.reject(version, routing.live, str(e), "canary")
            routing = write_routing(self.repo, self.model,
                                    replace(routing, canary=version, canary_share=share))
            self._record(lambda: self.serving_status.mark(version, CANARY))
        logger.info("%s: canary version %s takes %.0f%% of requests", self.model, version,
                    share * 100)
        return routing

    def end_canary(self, *, promote: bool, reason: str) -> SwapResult | None:
        """Promote the running canary (swap the live model to it) or drop it.

        Returns the swap's result when promoted, None when dropped.

        Raises:
            SwapError: no canary is running, or promoting it failed (the live version and
                the canary keep serving as before).
        """
        routing = read_routing(self.repo, self.model) or Routing()
        version = routing.canary
        if version is None:
            raise SwapError(f"{self.model} has no canary running")
        if promote:
            # The canary keeps its share until the live model has switched to its version.
            return self.deploy(version, reason="canary")
        with self._lock():
            routing = read_routing(self.repo, self.model) or Routing()
            if routing.canary != version:  # another caller ended it meanwhile
                raise SwapError(f"canary version {version} of {self.model} already ended")
            write_routing(self.repo, self.model, replace(routing, canary=None, canary_share=0.0))
            self._drop_canary_model(version, promoted=False)
        summary = f"{self.model} canary version {version} was rolled back: {reason}"
        logger.warning("%s; version %s keeps serving", summary, routing.live)
        self.emit(Alert(
            name=ALERT_CANARY_ROLLED_BACK, status="firing", severity=Severity.WARNING,
            summary=summary[:1000],
            description=f"Version {routing.live} serves all traffic. Look at the canary's "
            "latency and feedback, then republish or `flywheel models promote` it.",
            runbook_url=runbook_url(ALERT_CANARY_ROLLED_BACK),
            labels={"model": self.model, "version": str(version),
                    "live_version": str(routing.live)},
        ))
        return None

    def rollback(self) -> SwapResult:
        """Drop the running canary, or else swap back to the version served before.

        Raises:
            SwapError: there is no previous version, or it fails to come back up.
        """
        routing = read_routing(self.repo, self.model) or Routing()
        if routing.canary is not None:  # the newest change is the canary: undo that
            self.end_canary(promote=False, reason="rolled back by hand")
            return SwapResult(self.model, routing.canary, routing.live, 0.0, 0.0, 0.0)
        if routing.previous is None:
            raise SwapError(f"{self.model} has no previous version to roll back to; "
                            "use `flywheel models promote VERSION`")
        history = routing.history or [routing.previous]
        return self.deploy(history[-1], reason="rollback", history=history[:-1])

    def warm_up(self, version: int) -> None:
        """Send one real request to a loaded version (the model warms itself at load).

        Raises:
            InferenceError: one of them failed.
        """
        inference = self.settings.inference
        options = GenerationOptions(max_new_tokens=min(8, inference.max_new_tokens))
        with TritonChat(self.settings.triton.grpc_address, model=self.model,
                        timeout_s=inference.request_timeout_s) as chat:
            chat.complete(WARMUP_PROMPT, version=version, options=options)

    def status(self) -> list[dict[str, object]]:
        """Every version with its metadata, routing role and serving state.

        `triton_state` is READY for the version the live model serves (as the model itself
        says) and for a loaded canary, UNLOADED for the others.
        """
        routing = read_routing(self.repo, self.model) or Routing()
        states: dict[str, str] = {}
        try:
            if self._runtime_ready():
                states[str(model_control.active_version(
                    self.settings.triton.grpc_address, self.model,
                    timeout_s=self.settings.inference.request_timeout_s))] = "READY"
            canary = canary_model_name(self.model)
            if routing.canary is not None and self._runtime_ready(canary):
                states[str(routing.canary)] = "READY"
        except InferenceError as e:
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

    def _reload(self, version: int, *, old: int, reason: str) -> None:
        """Reload the model on `version`'s folder (a new base model): Triton loads it
        beside the old one and switches when it is ready; on failure the old one serves."""
        logger.warning("%s version %s is on another base model: full reload", self.model,
                       version)
        write_active_version(self.repo, self.model, version)
        set_loaded_versions(self.repo, self.model, [version])
        try:
            self._load(version)
        except (SwapError, TritonUnavailableError) as e:
            write_active_version(self.repo, self.model, old)
            set_loaded_versions(self.repo, self.model, [old])
            if isinstance(e, TritonUnavailableError):
                raise
            self.reject(version, old, str(e), reason)

    def _record(self, write: Callable[[], object]) -> None:
        try:
            write()
        except ServingStatusError as e:  # bookkeeping: never undo a swap for it
            logger.error("%s: serving status not recorded in model_versions: %s; it is "
                         "rewritten at the next swap or controller start", self.model, e)

    def _activate(self, version: int) -> dict[str, Any]:
        return model_control.activate(self.settings.triton.grpc_address, self.model, version,
                                      timeout_s=self.settings.inference.load_timeout_s)

    def _load(self, version: int, *, model: str | None = None) -> None:
        model_control.load(self.settings.triton.grpc_address, model or self.model, version,
                           timeout_s=self.settings.inference.load_timeout_s)

    def _unload(self, model: str) -> None:
        model_control.unload(self.settings.triton.grpc_address, model)

    def _runtime_ready(self, model: str | None = None) -> bool:
        return model_control.is_ready(self.settings.triton.grpc_address, model or self.model)

    def _drop_canary_model(self, version: int, *, promoted: bool) -> None:
        """Unload the canary model once gateways have reread routing (they poll it)."""
        inference = self.settings.inference
        time.sleep(max(inference.drain_s, 2 * inference.routing_poll_interval_s))
        self._unload(canary_model_name(self.model))
        if not promoted:
            self._record(lambda: self.serving_status.mark(version, ROLLED_BACK))

    def reject(self, version: int, live: int, detail: str, reason: str) -> None:
        """Refuse `version`: record it `refused` in model_versions, alert, and raise.

        Raises:
            SwapError: always; the message says which version keeps serving.
        """
        summary = f"{self.model} version {version} was not deployed ({reason}): {detail}"
        logger.error("%s; version %s keeps serving", summary, live)
        self._record(lambda: self.serving_status.refuse(version, f"{reason}: {detail}"))
        self.emit(Alert(
            name=ALERT_SWAP_FAILED, status="firing", severity=Severity.CRITICAL,
            summary=summary[:1000],
            description=f"Version {live} keeps serving. Check the version folder "
            f"{self.repo / self.model / str(version)} and Triton's log, then republish.",
            runbook_url=runbook_url(ALERT_SWAP_FAILED),
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


def runbook_url(alert_name: str) -> str:
    """Where the runbook of an alert this package raises is, relative to the repository."""
    return f"docs/runbooks/{alert_name}.md"
