"""Which version serves: `<repo>/<model>/routing.json`, written by the controller only.

The gateway rereads it when its mtime changes (checked at most every
`inference.routing_poll_interval_s`). Triton ignores files in a model folder other than
config.pbtxt, so it lives beside the versions it names.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from inference.repository import BASE_VERSION, _write_text_atomically, model_dir

logger = logging.getLogger(__name__)

ROUTING_FILE = "routing.json"


@dataclass(frozen=True)
class Routing:
    """The live version, the one before it, and an optional canary with its traffic share."""

    live: int = BASE_VERSION
    previous: int | None = None
    canary: int | None = None
    canary_share: float = 0.0
    history: list[int] = field(default_factory=list)
    updated_at: str = ""

    def pick(self, draw: float) -> int:
        """The version for one request, given a uniform draw in [0, 1)."""
        if self.canary is not None and draw < self.canary_share:
            return self.canary
        return self.live

    def loaded(self) -> list[int]:
        return sorted({self.live} | ({self.canary} if self.canary is not None else set()))


def routing_path(repo: Path, model: str) -> Path:
    return model_dir(repo, model) / ROUTING_FILE


def read_routing(repo: Path, model: str) -> Routing | None:
    """The routing of a model, or None before the controller first wrote it."""
    path = routing_path(repo, model)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return Routing(**data)


def write_routing(repo: Path, model: str, routing: Routing) -> Routing:
    stamped = Routing(**{**asdict(routing), "updated_at": datetime.now(UTC).isoformat()})
    _write_text_atomically(routing_path(repo, model), json.dumps(asdict(stamped), indent=2))
    logger.info("routing of %s: live %s, canary %s (%.0f%%)", model, stamped.live,
                stamped.canary, stamped.canary_share * 100)
    return stamped


class RoutingWatcher:
    """Cached view of routing.json for the gateway's hot path."""

    def __init__(self, repo: Path, model: str, *, poll_interval_s: float) -> None:
        self._path = routing_path(repo, model)
        self._repo = repo
        self._model = model
        self._poll_interval_s = poll_interval_s
        self._checked_s = 0.0
        self._mtime_ns = -1
        self._routing = Routing()
        self._random = random.Random()

    def current(self, *, force: bool = False) -> Routing:
        now = time.monotonic()
        if force or now - self._checked_s >= self._poll_interval_s:
            self._checked_s = now
            try:
                mtime_ns = os.stat(self._path).st_mtime_ns
            except FileNotFoundError:
                return self._routing
            if mtime_ns != self._mtime_ns:
                routing = read_routing(self._repo, self._model)
                if routing is not None:
                    self._routing, self._mtime_ns = routing, mtime_ns
        return self._routing

    def pick(self) -> int:
        return self.current().pick(self._random.random())
