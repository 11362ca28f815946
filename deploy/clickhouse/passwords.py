"""Passwords of the embedded server's accounts: given in settings, or generated once.

An account whose password is left empty in `clickhouse.users` gets a random one at
first use, kept in `<state_dir>/clickhouse/passwords/<user>` with mode 0600 (the
folder 0700), as real ClickHouse keeps its users' secrets out of reach of other
local users. The server and every `flywheel` command on the machine read the same
file, so nobody types the admin password and no account is ever open without one.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from deploy.settings import ClickHouseUser, FlywheelSettings

_PASSWORD_BYTES = 24


def password_file(state_path: Path, user: str) -> Path:
    """Where the generated password of `user` is kept."""
    return state_path / "clickhouse" / "passwords" / user


def stored_password(state_path: Path, user: str) -> str:
    """The generated password of `user`, created with mode 0600 on first use.

    Two processes asking at once get the same password: the file is created with
    O_EXCL, and the loser reads the winner's.

    Raises:
        OSError: the state folder cannot be written or read.
    """
    path = password_file(state_path, user)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # the creator may not have written it yet
            text = path.read_text().strip()
            if text:
                return text
            time.sleep(0.02)
        raise OSError(f"{path} is empty; delete it and retry") from None
    password = secrets.token_urlsafe(_PASSWORD_BYTES)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return password


def account_password(settings: FlywheelSettings, account: ClickHouseUser) -> str:
    """The password the embedded server accepts for `account`."""
    given = account.password.get_secret_value()
    return given or stored_password(settings.state_path, account.name)


def client_password(settings: FlywheelSettings) -> str:
    """The password Flywheel's own code sends as `clickhouse.user`.

    `clickhouse.password` when set; against a real server by URL, that (or nothing);
    against the embedded server, the account's generated password.
    """
    ch = settings.clickhouse
    given = ch.password.get_secret_value()
    if given or ch.external:
        return given
    for account in ch.users:
        if account.name == ch.user:
            return account_password(settings, account)
    return stored_password(settings.state_path, ch.user)
