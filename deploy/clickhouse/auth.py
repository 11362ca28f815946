"""Who is asking: ClickHouse's HTTP credentials checked against the server's accounts.

Every request names an account and its password (basic auth, the
X-ClickHouse-User/-Key headers, or the user/password parameters, as ClickHouse
accepts them). There is no anonymous access: a request without credentials is the
account `default` with an empty password, which no account has.
"""

from __future__ import annotations

import base64
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from deploy.clickhouse.errors import AUTHENTICATION_FAILED, ServerError
from deploy.clickhouse.passwords import account_password
from deploy.settings import ClickHouseUser, FlywheelSettings

logger = logging.getLogger(__name__)


def credentials(headers: Mapping[str, str], params: Mapping[str, str]) -> tuple[str, str]:
    """User and password from basic auth, X-ClickHouse-User/-Key, or user/password params.

    Raises:
        ServerError: 516 when the credentials are malformed, of a scheme other than
            Basic, or given two ways at once.
    """
    ways: list[tuple[str, str]] = []
    authorization = headers.get("Authorization", headers.get("authorization", ""))
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            raise ServerError(AUTHENTICATION_FAILED, f"Authorization scheme {scheme[:20]!r} is "
                              "not supported; use Basic (user:password), or the X-ClickHouse-User "
                              "and X-ClickHouse-Key headers")
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode() \
                .partition(":")
        except (ValueError, UnicodeDecodeError) as e:
            raise ServerError(AUTHENTICATION_FAILED, "Malformed basic authorization header") from e
        ways.append((user, password))
    user_header = headers.get("X-ClickHouse-User")
    key_header = headers.get("X-ClickHouse-Key")
    if user_header is not None or key_header is not None:
        ways.append((user_header or "default", key_header or ""))
    if "user" in params or "password" in params:
        ways.append((params.get("user", "default"), params.get("password", "")))
    if len(ways) > 1:
        raise ServerError(
            AUTHENTICATION_FAILED,
            "Credentials given by more than one method (basic auth, X-ClickHouse-User headers, "
            "user/password parameters); use one.",
        )
    return ways[0] if ways else ("default", "")


@dataclass(frozen=True)
class _Account:
    user: ClickHouseUser
    password: bytes


class Accounts:
    """The server's accounts with their resolved passwords (generated ones read once)."""

    def __init__(self, settings: FlywheelSettings) -> None:
        self._accounts = {
            u.name: _Account(u, account_password(settings, u).encode())
            for u in settings.clickhouse.users
        }

    def known(self, user: str) -> bool:
        """Whether `user` names an account."""
        return user in self._accounts

    def authenticate(self, user: str, password: str) -> ClickHouseUser:
        """The account `user` when `password` is its password.

        Raises:
            ServerError: 516 AUTHENTICATION_FAILED, with ClickHouse's wording, for an
                unknown user, a wrong password or none (the cases are not told apart).
        """
        account = self._accounts.get(user)
        # Compare against something even for an unknown user, so timing tells nothing.
        expected = account.password if account else b"\0" * 32
        if hmac.compare_digest(expected, password.encode("utf-8", "surrogatepass")) and account:
            return account.user
        hint = (" No credentials were sent: every account has a password (basic auth, or "
                "X-ClickHouse-User and X-ClickHouse-Key)." if not password else "")
        raise ServerError(
            AUTHENTICATION_FAILED,
            f"{user[:64]}: Authentication failed: password is incorrect, or there is no user "
            f"with such name.{hint}",
        )
