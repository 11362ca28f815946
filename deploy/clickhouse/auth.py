"""Who is asking: ClickHouse's HTTP credentials checked against `settings.clickhouse.users`."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from deploy.clickhouse.errors import AUTHENTICATION_FAILED, ServerError
from deploy.settings import ClickHouseUser

if TYPE_CHECKING:
    from email.message import Message


def credentials(
    headers: Mapping[str, str] | Message[str, str], params: Mapping[str, str]
) -> tuple[str, str]:
    """User and password from basic auth, X-ClickHouse-User/-Key, or user/password params.

    Raises:
        ServerError: 516 when the credentials are malformed or given two ways at once.
    """
    ways: list[tuple[str, str]] = []
    authorization = headers.get("Authorization", "")
    if authorization.lower().startswith("basic "):
        try:
            user, _, password = base64.b64decode(authorization[6:].strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError) as e:
            raise ServerError(AUTHENTICATION_FAILED, "Malformed basic authorization header") from e
        ways.append((user, password))
    if "X-ClickHouse-User" in headers or "X-ClickHouse-Key" in headers:
        ways.append(
            (headers.get("X-ClickHouse-User", "default"), headers.get("X-ClickHouse-Key", ""))
        )
    if "user" in params or "password" in params:
        ways.append((params.get("user", "default"), params.get("password", "")))
    if len(ways) > 1:
        raise ServerError(
            AUTHENTICATION_FAILED,
            "Credentials given by more than one method (basic auth, X-ClickHouse-User headers, "
            "user/password parameters); use one.",
        )
    return ways[0] if ways else ("default", "")


def authenticate(user: str, password: str, users: Sequence[ClickHouseUser]) -> ClickHouseUser:
    """The account `user` when `password` is its password.

    Raises:
        ServerError: 516 AUTHENTICATION_FAILED, with ClickHouse's wording, for an
            unknown user or a wrong password (the two are not told apart).
    """
    for account in users:
        if account.name == user and hmac.compare_digest(
            account.password.get_secret_value().encode(), password.encode()
        ):
            return account
    raise ServerError(
        AUTHENTICATION_FAILED,
        f"{user}: Authentication failed: password is incorrect, or there is no user with such "
        "name.",
    )
