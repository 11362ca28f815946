"""Building blocks of the settings sections."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

Port = int


def _check_port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError(f"a port must be between 1 and 65535, got {value}")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _HttpServer(_Section):
    """A service reached over HTTP: external when `url` is set, else local on host:port."""

    url: str | None = None
    host: str = "127.0.0.1"
    port: Port

    @property
    def external(self) -> bool:
        return self.url is not None

    @property
    def http_url(self) -> str:
        return (self.url or f"http://{self.host}:{self.port}").rstrip("/")


