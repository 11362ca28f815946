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
from typing import Any

from deploy.clickhouse.engine import Engine, Handle, Outcome, ResultStream, quote_value
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
LARGE_STATEMENT_BYTES = 64 << 10


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
    def handle_for(self, request: Request, account: ClickHouseUser, *,
                   large: bool = False) -> Iterator[Handle]:
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
            _apply_account(handle, account, large=large)
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
                handle.database = self.engine.database
                _apply_account(handle, account, large=True)
                handle.prepared = True
            # The database parameter applies to this query only, as in ClickHouse.
            previous = None
            if request.database and request.database != handle.database:
                if handle.database is None:
                    handle.database = handle.query(
                        "SELECT currentDatabase()", "TSVRaw").data.decode().strip()
                previous = handle.database
                if request.database != previous:
                    handle.query(f"USE {_identifier(request.database)}")
                else:
                    previous = None
            _create_external_tables(handle, request.external_tables)
            # A URL `readonly` is checked by the front (`check`), not set on the engine:
            # a session handle in readonly=1 could never be set back for the next request.
            _apply_url_settings(handle, {k: v for k, v in request.settings.items()
                                         if k != "readonly"})
            try:
                yield handle
            finally:
                for table in request.external_tables:
                    handle.query(f"DROP TEMPORARY TABLE IF EXISTS {_identifier(table.name)}")
                if previous:
                    handle.query(f"USE {_identifier(previous)}")
                    handle.database = previous
        finally:
            session.handle.lock.release()
            session.last_used = time.monotonic()

    def check(self, handle: Handle, statement: Statement, request: Request,
              account: ClickHouseUser) -> None:
        """The policy check of one statement (its head only for inserts with data).

        Raises:
            ServerError: the statement is refused (see `StatementPolicy.check`).
        """
        if request.params.get("session_id") and not account.readonly:
            if request.method == "GET" and not statement.is_read_only:
                raise ServerError(READONLY, "Cannot execute query in readonly mode. For queries "
                                  "over HTTP, method GET implies readonly. Use method POST "
                                  "instead.")
            readonly = request.params.get("readonly", "0")
            allowed = statement.is_read_only or (readonly == "2" and statement.kind == "SET")
            if readonly not in ("", "0") and not allowed:
                raise ServerError(READONLY, f"Cannot execute {statement.kind or 'this'} query "
                                  f"in readonly mode (readonly={readonly[:8]} in the URL)")
        sql = statement.sql
        if statement.is_insert_with_data:  # the parser wants the head whole: INSERT ... FORMAT x
            sql += b" FORMAT " + (statement.insert_format or "").encode()
        self.policy.check(handle, sql, account,
                          database=request.database or self.engine.database,
                          params=request.query_params)


def _apply_url_settings(handle: Handle, wanted: dict[str, str]) -> None:
    """A session request's URL settings, for this request; the session keeps its own.

    Raises:
        ServerError: a setting is unknown, or refused (readonly).
    """
    overrides = handle.url_overrides
    restore = {name: overrides.pop(name)[0] for name in list(overrides) if name not in wanted}
    if restore:
        handle.restore(restore)
    new = [name for name in wanted if name not in overrides]
    snapshot = handle.snapshot(new) if new else {}
    changes: dict[str, str] = {}
    recorded: dict[str, tuple[tuple[str, bool], str]] = {}
    for name, value in wanted.items():
        if name in overrides:
            if overrides[name][1] != value:
                changes[name] = value
                recorded[name] = (overrides[name][0], value)
        else:
            before = snapshot.get(name, ("", False))
            recorded[name] = (before, value)
            if before[0] != value:
                changes[name] = value
    if changes:
        handle.set(changes)
    overrides.update(recorded)


def _apply_account(handle: Handle, account: ClickHouseUser, *, large: bool) -> None:
    """The account's limits, then readonly; a read-only account cannot change them after.

    `large`: the statement may be long, so the policy check's query (the statement in
    a literal) needs more than ClickHouse's default max_query_size.
    """
    limits: dict[str, str] = {"max_query_size": str(_POLICY_QUERY_SIZE)} if large else {}
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


class Execution:
    """One statement's run, driven from the HTTP layer in as few thread hops as possible.

    `start` prepares the handle, checks the statement and runs it, or for a SELECT
    reads its first blocks, all in one call (one hop to a worker thread); a long
    result is then read with `next_block`. `close` releases the handle.
    """

    def __init__(self, executor: Executor, request: Request, account: ClickHouseUser,
                 statement: Statement, *, sql: bytes, fmt: str, buffer_bytes: int) -> None:
        self.executor = executor
        self.request = request
        self.account = account
        self.statement = statement
        self.sql = sql
        self.fmt = fmt
        self.buffer_bytes = buffer_bytes
        self.handle: Handle | None = None
        self.stream: ResultStream | None = None
        self._context: Any = None

    def prepare(self) -> Handle:
        """The prepared handle, with the statement checked.

        Raises:
            ServerError: a setting or the statement was refused.
        """
        large = len(self.statement.sql) > LARGE_STATEMENT_BYTES
        self._context = self.executor.handle_for(self.request, self.account, large=large)
        self.handle = self._context.__enter__()
        self.executor.check(self.handle, self.statement, self.request, self.account)
        return self.handle

    def start(self, *, whole: bool) -> tuple[Outcome, bool]:
        """Run the statement: (what it returned so far, whether that is all of it).

        `whole`: the client waits for the whole result (wait_end_of_query), so it is
        read in one engine call. When the result is complete the handle is released
        here too, so a small query costs one hop to a worker thread.

        Raises:
            ServerError: the statement was refused or failed.
        """
        try:
            outcome, complete = self._start(whole=whole)
        except BaseException:
            self.close()
            raise
        if complete:
            self.close()
        return outcome, complete

    def _start(self, *, whole: bool) -> tuple[Outcome, bool]:
        handle = self.prepare()
        if whole or self.statement.kind not in STREAMED_KINDS:
            if self.statement.kind == "USE":
                handle.database = None  # the session's database is the client's choice now
            return handle.query(self.sql, self.fmt, self.request.query_params), True
        self.stream = stream = handle.stream(self.sql, self.fmt, self.request.query_params)
        blocks: list[bytes] = []
        size = 0
        while not stream.done and size < self.buffer_bytes:
            block = stream.fetch()
            if block is None:
                break
            blocks.append(block)
            size += len(block)
        outcome = Outcome(data=b"".join(blocks), read_rows=stream.read_rows,
                          read_bytes=stream.read_bytes, result_rows=stream.result_rows,
                          elapsed_s=time.perf_counter() - stream.started)
        return outcome, stream.done

    def next_block(self) -> bytes | None:
        """The next block of a long result, or None at its end.

        Raises:
            ServerError: the query failed while running.
        """
        return self.stream.fetch() if self.stream is not None else None

    @property
    def closed(self) -> bool:
        return self._context is None

    def close(self) -> None:
        """Release the handle (the query must have ended or been killed)."""
        if self.stream is not None:
            self.stream.cancel()
        if self._context is not None:
            context, self._context = self._context, None
            context.__exit__(None, None, None)
