"""The ClickHouse client Flywheel's own code uses, for the embedded or a real server."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from deploy.clickhouse.passwords import client_password
from deploy.settings import FlywheelSettings


def get_client(settings: FlywheelSettings, *, readonly: bool = False, **kwargs: Any) -> Any:
    """A clickhouse-connect HTTP client for `settings.clickhouse.http_url`.

    Identical against the embedded server and a real one: same URL scheme, credentials,
    database and compression. Against the embedded server with no password set, the
    account's generated password is read from the state folder (`passwords.py`).
    `readonly=True` adds ClickHouse's `readonly=1` setting, so the server refuses writes.
    Extra keyword arguments go to `clickhouse_connect.get_client` and win.

    Raises:
        clickhouse_connect.driver.exceptions.OperationalError: the server is unreachable.
        clickhouse_connect.driver.exceptions.DatabaseError: it refused the credentials.
    """
    import clickhouse_connect

    ch = settings.clickhouse
    url = urlsplit(ch.http_url)
    secure = url.scheme == "https"
    client_settings = dict(kwargs.pop("settings", None) or {})
    if readonly:
        client_settings["readonly"] = "1"
    options: dict[str, Any] = {
        "interface": url.scheme or "http",
        "host": url.hostname or ch.host,
        "port": url.port or (8443 if secure else 8123),
        "username": ch.user,
        "password": client_password(settings),
        "database": ch.database,
        "compress": False if ch.compress == "none" else ch.compress,
        "settings": client_settings,
    }
    options.update(kwargs)
    return clickhouse_connect.get_client(**options)
