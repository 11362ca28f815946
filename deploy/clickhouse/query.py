"""Run one HTTP request's statement on the engine with ClickHouse's HTTP semantics.

Which handle (fresh, or the session's), which database (for this query only, as in
ClickHouse), which settings (URL parameters; the account's limits and readonly,
which the account cannot lift; readonly=2 for GET, as ClickHouse does), external
data tables, the policy check, and the statement itself: a streamed
`INSERT ... FORMAT` / `VALUES`, a streamed SELECT, or any other statement.

Everything here blocks (chDB calls); the HTTP layer runs it on worker threads.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from deploy.clickhouse.engine import Engine, Handle, quote_value
from deploy.clickhouse.errors import BAD_ARGUMENTS, READONLY, ServerError
from deploy.clickhouse.policy import StatementPolicy
from deploy.clickhouse.statements import Statement
from deploy.settings import ClickHouseUser

logger = logging.getLogger(__name__)

# URL parameters the HTTP layer consumes; every other one (but param_*) is a setting.
TRANSPORT_PARAMS = frozenset({
    "query", "database", "default_format", "user", "password", "session_id", "session_timeout",
    "session_check", "query_id", "quota_key", "compress", "decompress", "buffer_size",
    "wait_end_of_query", "client_protocol_version", "role", "send_progress_in_http_headers",
    "http_headers_progress_interval_ms", "enable_http_compression", "http_zlib_compression_level",
    "http_native_compression_disable_checksumming_on_decompress", "http_response_buffer_size",
})
DEFAULT_FORMAT = "TabSeparated"
DEFAULT_SESSION_TIMEOUT_S = 60.0
# Statements whose answer is a result in a format (X-ClickHouse-Format is sent for them).
RESULT_KINDS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN",
                          "KILL", "CHECK", ""})
STREAMED_KINDS = frozenset({"SELECT", "WITH"})
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The policy check prints the statement inside a string literal: room for twice its size.
_POLICY_QUERY_SIZE = 8 << 20


@dataclass(frozen=True)
class ExternalTable:
    """An external data table sent with the query (`<name>_structure`, `<name>_format`)."""

    name: str
    structure: str
    format: str
    data: bytes


@dataclass(frozen=True)
class Request:
    """The parts of an HTTP request that decide what runs."""

    params: Mapping[str, str]
    method: str = "POST"
    header_format: str | None = None
    header_database: str | None = None
    external_tables: tuple[ExternalTable, ...] = field(default_factory=tuple)

    @property
    def settings(self) -> dict[str, str]:
        external = {f"{t.name}_{part}" for t in self.external_tables
                    for part in ("structure", "format", "types")}
        return {k: v for k, v in self.params.items()
                if k not in TRANSPORT_PARAMS and not k.startswith("param_") and k not in external}

    @property
    def query_params(self) -> dict[str, str]:
        return {k[6:]: v for k, v in self.params.items() if k.startswith("param_")}

    @property
    def default_format(self) -> str:
        return self.params.get("default_format") or self.header_format or DEFAULT_FORMAT

    @property
    def database(self) -> str | None:
        return self.params.get("database") or self.header_database or None


class Executor:
    """Prepares handles for requests and runs statements on them."""

    def __init__(self, engine: Engine, policy: StatementPolicy) -> None:
        self.engine = engine
        self.policy = policy

    @contextmanager
    def handle_for(self, request: Request, account: ClickHouseUser) -> Iterator[Handle]:
        """The handle the request runs on, prepared; released (or closed) afterwards.

        Raises:
            ServerError: a setting was refused, the session is busy or belongs to
                another account, the database does not exist.
        """
        session_id = request.params.get("session_id")
        if session_id:
            with self._session_handle(request, account, session_id) as handle:
                yield handle
            return
        handle = self.engine.new_handle()
        try:
            handle.query(f"USE {_identifier(request.database or self.engine.database)}")
            _create_external_tables(handle, request.external_tables)
            _apply_account(handle, account)
            settings = request.settings
            if not account.readonly and request.method == "GET":
                settings["readonly"] = "2"
            handle.set(settings)
            yield handle
        finally:
            handle.close()

    @contextmanager
    def _session_handle(self, request: Request, account: ClickHouseUser,
                        session_id: str) -> Iterator[Handle]:
        try:
            timeout_s = float(request.params.get("session_timeout") or DEFAULT_SESSION_TIMEOUT_S)
        except ValueError as e:
            raise ServerError(374, f"Invalid session timeout "
                              f"{request.params['session_timeout'][:40]!r}") from e
        session = self.engine.session(session_id, user=account.name, timeout_s=timeout_s,
                                      check=request.params.get("session_check") == "1")
        self.engine.lock_session(session)
        handle = session.handle
        try:
            if not handle.prepared:
                handle.query(f"USE {_identifier(self.engine.database)}")
                _apply_account(handle, account)
                handle.prepared = True
            # The database parameter applies to this query only, as in ClickHouse.
            previous = None
            if request.database:
                previous = handle.query("SELECT currentDatabase()", "TSVRaw").data.decode().strip()
                handle.query(f"USE {_identifier(request.database)}")
            _create_external_tables(handle, request.external_tables)
            wanted = request.settings
            snapshot = handle.snapshot(wanted) if wanted else {}
            changes = {k: v for k, v in wanted.items()
                       if snapshot.get(k, ("\0", False))[0] != v}
            restore = {k: snapshot.get(k, ("", False)) for k in changes}
            try:
                handle.set(changes)
                yield handle
            finally:
                handle.restore(restore)
                for table in request.external_tables:
                    handle.query(f"DROP TEMPORARY TABLE IF EXISTS {_identifier(table.name)}")
                if previous:
                    handle.query(f"USE {_identifier(previous)}")
        finally:
            session.handle.lock.release()
            session.last_used = time.monotonic()

    def check(self, handle: Handle, statement: Statement, request: Request,
              account: ClickHouseUser) -> None:
        """The policy check of one statement (its head only for inserts with data).

        Raises:
            ServerError: the statement is refused (see `StatementPolicy.check`).
        """
        if request.method == "GET" and not statement.is_read_only and not account.readonly:
            if request.params.get("session_id"):
                raise ServerError(READONLY, "Cannot execute query in readonly mode. For queries "
                                  "over HTTP, method GET implies readonly. Use method POST "
                                  "instead.")
        sql = statement.sql
        if statement.is_insert_with_data:  # the parser wants the head whole: INSERT ... FORMAT x
            sql += b" FORMAT " + (statement.insert_format or "").encode()
        self.policy.check(handle, sql, account,
                          database=request.database or self.engine.database,
                          params=request.query_params)


def _apply_account(handle: Handle, account: ClickHouseUser) -> None:
    """The account's limits, then readonly; a read-only account cannot change them after."""
    limits: dict[str, str] = {"max_query_size": str(_POLICY_QUERY_SIZE)}
    if account.max_execution_time_s:
        limits["max_execution_time"] = str(account.max_execution_time_s)
    if account.max_memory_usage_bytes:
        limits["max_memory_usage"] = str(account.max_memory_usage_bytes)
    if account.max_result_rows:
        limits["max_result_rows"] = str(account.max_result_rows)
        limits["result_overflow_mode"] = "throw"
    if account.readonly:
        limits["readonly"] = "1"
    handle.set(limits)


def _create_external_tables(handle: Handle, tables: tuple[ExternalTable, ...]) -> None:
    for table in tables:
        name = _identifier(table.name)
        handle.query(
            f"CREATE TEMPORARY TABLE {name} ENGINE = Memory EMPTY AS SELECT * FROM "
            f"format({_identifier(table.format)}, {quote_value(table.structure)}, '')")
        if table.data:
            handle.insert(f"INSERT INTO {name}", table.format, iter((table.data,)))


def _identifier(name: str) -> str:
    if _IDENTIFIER.match(name):
        return name
    if "`" in name or "\\" in name or "\0" in name or not name:
        raise ServerError(BAD_ARGUMENTS, f"{name[:64]!r} is not a valid name")
    return f"`{name}`"
