"""Waiting for a condition in tests of real services (never for a fixed time)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(condition: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.25) -> bool:
    """Poll until the condition holds or the timeout passes; the condition's last answer."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return condition()
