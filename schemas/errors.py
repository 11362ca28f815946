"""The root of every error Flywheel raises on purpose."""

from __future__ import annotations


class FlywheelError(Exception):
    """Base class of all Flywheel errors; the message says what to do about it."""
