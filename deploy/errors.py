"""Errors raised while configuring or running Flywheel's processes."""

from __future__ import annotations

from schemas.errors import FlywheelError


class ConfigError(FlywheelError):
    """A setting is missing, malformed or inconsistent."""


class StackError(FlywheelError):
    """A local service could not be prepared, started, checked or stopped."""


class PortInUseError(StackError):
    """A port a local service needs is already taken by another process."""

    def __init__(self, *, port: int, host: str, setting: str, service: str) -> None:
        self.port = port
        self.setting = setting
        super().__init__(
            f"{service} needs port {port} on {host}, but another process is listening there. "
            f"Stop that process, or choose a free port with the setting {setting}."
        )


class MissingToolError(StackError):
    """A program the local stack needs is not installed."""
