"""Run one HTTP request's statement on the engine with ClickHouse's HTTP semantics.

Which handle (fresh, or the session's), which database, which settings (URL
parameters, the account's readonly, readonly=2 for GET as ClickHouse does), and the
statement itself: a streamed `INSERT ... FORMAT` or a query in the requested format.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from deploy.clickhouse.engine import Engine, Handle, Outcome
from deploy.clickhouse.errors import READONLY, ServerError
from deploy.clickhouse.statements import Statement, split
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
_INSERT_CHUNK_BYTES = 8 << 20


@dataclass(frozen=True)
class Request:
    """The parts of an HTTP request that decide what runs."""

    params: Mapping[str, str]
    text: bytes
    method: str = "POST"

    @property
    def settings(self) -> dict[str, str]:
        return {k: v for k, v in self.params.items()
                if k not in TRANSPORT_PARAMS and not k.startswith("param_")}

    @property
    def query_params(self) -> dict[str, str]:
        return {k[6:]: v for k, v in self.params.items() if k.startswith("param_")}

    @property
    def default_format(self) -> str:
        return self.params.get("default_format") or DEFAULT_FORMAT


@dataclass(frozen=True)
class Result:
    """What the HTTP layer sends back."""

    outcome: Outcome
    format: str


def execute(engine: Engine, request: Request, account: ClickHouseUser) -> Result:
    """Run the request's statement as `account`.

    Raises:
        ServerError: the statement failed, a setting was refused, or the session is busy.
    """
    statement = split(request.text)
    if not statement.sql.strip():
        raise ServerError(62, "Empty query", name="SYNTAX_ERROR")
    fmt = statement.output_format(request.default_format)
    session_id = request.params.get("session_id")
    if session_id:
        return Result(_in_session(engine, request, statement, account, session_id, fmt), fmt)
    handle = engine.new_handle()
    try:
        handle.query(f"USE `{_database(engine, request)}`")
        settings = request.settings
        if account.readonly:
            handle.set({"readonly": "1"})
        elif request.method == "GET":
            settings["readonly"] = "2"
        handle.set(settings)
        return Result(_run(handle, statement, request, fmt), fmt)
    finally:
        handle.close()


def _in_session(engine: Engine, request: Request, statement: Statement,
                account: ClickHouseUser, session_id: str, fmt: str) -> Outcome:
    try:
        timeout_s = float(request.params.get("session_timeout") or DEFAULT_SESSION_TIMEOUT_S)
    except ValueError as e:
        raise ServerError(
            374, f"Invalid session timeout {request.params['session_timeout']!r}"
        ) from e
    session = engine.session(session_id, user=account.name, timeout_s=timeout_s,
                             check=request.params.get("session_check") == "1")
    engine.lock_session(session)
    handle = session.handle
    try:
        if not handle.prepared:
            handle.query(f"USE `{engine.database}`")
            if account.readonly:
                handle.set({"readonly": "1"})
            handle.prepared = True
        if "database" in request.params:
            handle.query(f"USE `{_database(engine, request)}`")
        if request.method == "GET" and not statement.is_read_only and not account.readonly:
            raise ServerError(READONLY, "Cannot execute query in readonly mode. For queries over "
                              "HTTP, method GET implies readonly. Use method POST instead.")
        # URL settings apply to this query only; the session keeps what it had.
        wanted = request.settings
        snapshot = handle.snapshot(wanted) if wanted else {}
        changes = {k: v for k, v in wanted.items() if snapshot.get(k, ("\0", False))[0] != v}
        restore = {k: snapshot.get(k, ("", False)) for k in changes}
        try:
            handle.set(changes)
            return _run(handle, statement, request, fmt)
        finally:
            handle.restore(restore)
    finally:
        session.handle.lock.release()
        session.last_used = time.monotonic()


def _run(handle: Handle, statement: Statement, request: Request, fmt: str) -> Outcome:
    if statement.is_insert_with_data:
        data = statement.data
        chunks = (data[i:i + _INSERT_CHUNK_BYTES] for i in range(0, len(data), _INSERT_CHUNK_BYTES))
        return handle.insert(statement.sql.decode("utf-8"), statement.insert_format or "", chunks)
    return handle.query(statement.sql, fmt, request.query_params)


def _database(engine: Engine, request: Request) -> str:
    name = request.params.get("database") or engine.database
    return name.replace("`", "\\`")
