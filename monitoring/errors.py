"""Errors of the monitoring package."""

from __future__ import annotations

from schemas.errors import FlywheelError


class MonitoringError(FlywheelError):
    """A monitoring step failed; the message says what to check."""


class EncoderUnavailableError(MonitoringError):
    """The offline sentence encoder could not be loaded."""


class AlertmanagerError(MonitoringError):
    """Alertmanager's API refused a request or could not be reached."""


class ReceiverError(MonitoringError):
    """An Alertmanager notification could not be parsed or stored."""
