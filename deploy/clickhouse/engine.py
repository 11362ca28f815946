"""The one chDB engine of the process, and the connection handles queries run on.

chDB hosts one engine per process but hands out any number of connection handles to
it; `SET` and `USE` state lives in a handle. Measured with chDB 4.4 (see
BENCHMARKS.md): queries on different handles run concurrently and release the GIL,
and opening plus closing a handle costs about 0.3 ms. So a request without a session
gets a fresh handle (nothing leaks between requests) and an HTTP session keeps its own
handle; a lock per handle serializes what runs on it.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.clickhouse.errors import (
    INVALID_SESSION_TIMEOUT,
    SESSION_IS_LOCKED,
    SESSION_NOT_FOUND,
    EngineStartError,
    ServerError,
)

logger = logging.getLogger(__name__)

_SETTING_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_SESSION_TIMEOUT_S = 3600.0


@dataclass
class Outcome:
    """What one statement returned: its bytes and the counters of X-ClickHouse-Summary."""

    data: bytes = b""
    read_rows: int = 0
    read_bytes: int = 0
    written_rows: int = 0
    written_bytes: int = 0
    elapsed_s: float = 0.0
    result_rows: int = 0

    def summary(self) -> dict[str, str]:
        return {
            "read_rows": str(self.read_rows),
            "read_bytes": str(self.read_bytes),
            "written_rows": str(self.written_rows),
            "written_bytes": str(self.written_bytes),
            "total_rows_to_read": str(self.read_rows),
            "result_rows": str(self.result_rows),
            "result_bytes": str(len(self.data)),
            "elapsed_ns": str(int(self.elapsed_s * 1e9)),
        }


def quote_value(value: str) -> str:
    """A setting value as a SQL string literal (ClickHouse casts it to the setting's type)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def check_setting_name(name: str) -> str:
    """Reject names that are not identifiers: they are interpolated into SET statements.

    Raises:
        ServerError: code 115 UNKNOWN_SETTING.
    """
    if not _SETTING_NAME_RE.match(name):
        raise ServerError(115, f"Setting {name!r} is not a valid setting name")
    return name


class Handle:
    """One chDB connection handle with its own settings and current database."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.lock = threading.Lock()
        #: Set once a session's handle has its database and readonly applied.
        self.prepared = False
        #: The current database when known (None after a USE of the client's own).
        self.database: str | None = None
        #: Settings a session request set from its URL: name -> (the session's own value
        #: and changed flag before, the value set). Restored lazily, at the next request
        #: that does not send them, so a client sending the same settings on every
        #: request (clickhouse-connect does) costs no engine call for them.
        self.url_overrides: dict[str, tuple[tuple[str, bool], str]] = {}

    def query(self, sql: str | bytes, fmt: str = "TabSeparated",
              params: Mapping[str, str] | None = None) -> Outcome:
        """Run one statement and return its output.

        Raises:
            ServerError: the engine rejected the statement (its code and message kept).
        """
        started = time.perf_counter()
        progress: dict[str, int] = {}
        try:
            self.conn.set_progress_callback(progress.update)
            result = self.conn.query(sql, fmt, params=dict(params or {}))
        except Exception as e:
            raise ServerError.from_engine(e) from e
        data = result.bytes() if hasattr(result, "bytes") else bytes(result or b"")
        # chDB's rows_read() of a result counts its rows; what was read comes as progress.
        return Outcome(data=data or b"", read_rows=int(progress.get("read_rows", 0)),
                       read_bytes=int(progress.get("read_bytes", 0)),
                       result_rows=_call(result, "rows_read") if data else 0,
                       elapsed_s=time.perf_counter() - started)

    def stream(self, sql: str | bytes, fmt: str,
               params: Mapping[str, str] | None = None) -> ResultStream:
        """Start a query whose result is read block by block (`ResultStream.fetch`).

        Raises:
            ServerError: the engine rejected the statement before its first block.
        """
        progress: dict[str, int] = {}
        try:
            self.conn.set_progress_callback(progress.update)
            stream = self.conn.send_query(sql, fmt, params=dict(params or {}))
        except Exception as e:
            raise ServerError.from_engine(e) from e
        return ResultStream(stream, progress)

    def start_insert(self, statement: str, fmt: str) -> Insert:
        """An `INSERT INTO ...` that takes FORMAT-encoded chunks one call at a time.

        Raises:
            ServerError: the engine rejected the statement.
        """
        return Insert(self.conn, statement, fmt)

    def insert(self, statement: str, fmt: str, chunks: Iterable[bytes]) -> Outcome:
        """Stream FORMAT-encoded chunks into `INSERT INTO ...` and commit.

        Returns only once the engine has committed the rows (acknowledged = stored).

        Raises:
            ServerError: the engine rejected the statement or the data; nothing is committed.
        """
        insert = self.start_insert(statement, fmt)
        try:
            for chunk in chunks:
                if chunk:
                    insert.append(chunk)
            return insert.finish()
        except BaseException:
            insert.cancel()
            raise

    def set(self, settings: Mapping[str, str]) -> None:
        """Apply settings with one `SET a = 'x', b = 'y'` (readonly last, so the rest apply).

        Raises:
            ServerError: an unknown setting, a bad value, or a change refused in readonly mode.
        """
        if not settings:
            return
        ordered = sorted(settings.items(), key=lambda kv: kv[0] == "readonly")
        self.query("SET " + ", ".join(f"{check_setting_name(k)} = {quote_value(v)}"
                                      for k, v in ordered))

    def snapshot(self, names: Iterable[str]) -> dict[str, tuple[str, bool]]:
        """The current value and `changed` flag of settings, to restore them later."""
        quoted = ", ".join(quote_value(check_setting_name(n)) for n in names)
        out = self.query(
            f"SELECT name, value, changed FROM system.settings WHERE name IN ({quoted})",
            "JSONEachRow",
        )
        snapshot = {}
        for line in out.data.splitlines():
            row = json.loads(line)
            snapshot[row["name"]] = (row["value"], bool(row["changed"]))
        return snapshot

    def restore(self, snapshot: Mapping[str, tuple[str, bool]]) -> None:
        parts = []
        for name, (value, changed) in snapshot.items():
            if changed:
                quoted = len(value) > 1 and value[0] == value[-1] == "'"
                literal = value if quoted else quote_value(value)
                parts.append(f"{name} = {literal}")
            else:
                parts.append(f"{name} = DEFAULT")
        if parts:
            try:
                self.query("SET " + ", ".join(parts))
            except ServerError:
                logger.warning("could not restore session settings %s", list(snapshot))

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:
            logger.debug("closing a chDB handle failed", exc_info=True)


class Insert:
    """One insert in progress: append chunks, then finish (commit) or cancel."""

    def __init__(self, conn: Any, statement: str, fmt: str) -> None:
        self.started = time.perf_counter()
        try:
            self._inner = conn.send_insert(statement, fmt)
        except Exception as e:
            raise ServerError.from_engine(e) from e

    def append(self, chunk: bytes) -> None:
        """Raises: ServerError: the engine refused the data."""
        try:
            self._inner.append(chunk)
        except Exception as e:
            raise ServerError.from_engine(e) from e

    def finish(self) -> Outcome:
        """Commit; returns once the rows are stored.

        Raises:
            ServerError: the engine refused the data; nothing is committed.
        """
        try:
            result = self._inner.finish()
        except Exception as e:
            raise ServerError.from_engine(e) from e
        return Outcome(written_rows=result.rows_written, written_bytes=result.bytes_written,
                       elapsed_s=time.perf_counter() - self.started)

    def cancel(self) -> None:
        """Roll back (a no-op once finished or failed)."""
        try:
            self._inner.cancel()
        except Exception:  # already finished or failed: nothing to roll back
            logger.debug("cancelling an insert failed", exc_info=True)


class ResultStream:
    """A streamed result: blocks of output bytes as the engine produces them."""

    def __init__(self, stream: Any, progress: dict[str, int]) -> None:
        self._stream = stream
        self._progress = progress  # the engine's latest progress report
        self.started = time.perf_counter()
        self.result_rows = 0
        self.done = False
        self._fetching = False

    def fetch(self) -> bytes | None:
        """The next block of output, or None at the end.

        Raises:
            ServerError: the query failed while running (its code and message kept).
        """
        if self.done:
            return None
        self._fetching = True
        try:
            block = self._stream.fetch()
        except Exception as e:
            self.done = True
            raise ServerError.from_engine(e) from e
        finally:
            self._fetching = False
        data = block.bytes() if block is not None else b""
        if not data:
            self.done = True
            return None
        self.result_rows += _call(block, "rows_read")  # a block's own rows
        return bytes(data)

    @property
    def read_rows(self) -> int:
        return int(self._progress.get("read_rows", 0))

    @property
    def read_bytes(self) -> int:
        return int(self._progress.get("read_bytes", 0))

    @property
    def fetching(self) -> bool:
        """A `fetch` is waiting on the engine in some thread."""
        return self._fetching

    def cancel(self) -> None:
        """Stop reading. While a `fetch` waits in another thread, chDB's cancel would
        wait for it (an aggregate may produce its one block hours later), so then
        only `Engine.kill` stops the query."""
        if self.done:
            return
        self.done = True
        if self._fetching:
            return
        try:
            self._stream.cancel()
        except Exception:
            logger.debug("cancelling a streamed query failed", exc_info=True)


_SAFE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")


def _tag(query_id: str) -> str:
    return f"/* flywheel query_id={query_id} "


def tag_statement(sql: bytes, *, query_id: str, user: str) -> bytes:
    """`sql` led by a comment naming its query id and account.

    chDB runs every statement as `default`, so this comment is where
    `system.processes` shows the real account, and how `Engine.kill` finds the
    statement of a client that went away. The id and name are checked to be plain
    words, so the comment cannot be closed early.
    """
    if not _SAFE_ID.match(query_id) or not _SAFE_ID.match(user):
        return sql
    return (_tag(query_id) + f"user={user} */ ").encode() + sql


def _call(result: Any, name: str) -> int:
    try:
        return int(getattr(result, name)())
    except Exception:
        return 0


@dataclass
class Session:
    """An HTTP session (`session_id`): a handle kept between requests until it idles out."""

    id: str
    user: str
    handle: Handle
    timeout_s: float
    last_used: float = field(default_factory=time.monotonic)


class Engine:
    """Owns chDB for this process: opens it, hands out handles, keeps sessions, closes it."""

    def __init__(self, *, path: Path, database: str) -> None:
        self.path = path
        self.database = database
        self.version = ""
        self.timezone = "UTC"
        self._root: Handle | None = None
        self._sessions: dict[str, Session] = {}
        self._sessions_lock = threading.Lock()

    def open(self) -> None:
        """Open (or create) the data folder and Flywheel's database.

        Raises:
            EngineStartError: chDB cannot open the folder (another process owns it?).
        """
        import chdb

        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._root = Handle(chdb.connect(str(self.path)))
        except Exception as e:
            raise EngineStartError(
                f"chDB could not open {self.path}: {e}. Only one process may own a chDB "
                "folder; stop the other ClickHouse server or choose another state_dir."
            ) from e
        self._root.query(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
        row = self._root.query("SELECT version(), timezone()").data.decode().strip().split("\t")
        self.version, self.timezone = row[0], row[1]
        logger.info("chDB %s opened at %s (timezone %s)", self.version, self.path, self.timezone)

    def new_handle(self) -> Handle:
        """A fresh handle with default settings.

        Raises:
            ServerError: the engine is closed or refused a new handle.
        """
        import chdb

        try:
            return Handle(chdb.connect(str(self.path)))
        except Exception as e:
            raise ServerError.from_engine(e) from e

    # -- sessions ------------------------------------------------------------------

    def session(self, session_id: str, *, user: str, timeout_s: float, check: bool) -> Session:
        """The session called `session_id` of `user`, created unless `check` is set.

        Raises:
            ServerError: 372 when `check` is set and it does not exist, 374 for a bad
                timeout, 373 when another user owns the id.
        """
        if not 0 < timeout_s <= MAX_SESSION_TIMEOUT_S:
            raise ServerError(INVALID_SESSION_TIMEOUT,
                              f"Invalid session timeout: {timeout_s}, must be in (0, 3600]")
        self.expire_sessions()
        with self._sessions_lock:
            session = self._sessions.get(session_id)
            if session is not None and session.user != user:
                raise ServerError(SESSION_IS_LOCKED,
                                  f"Session {session_id} belongs to another user")
            if session is None:
                if check:
                    raise ServerError(SESSION_NOT_FOUND, f"Session {session_id} not found")
                session = Session(session_id, user, self.new_handle(), timeout_s)
                self._sessions[session_id] = session
            session.timeout_s = timeout_s
            session.last_used = time.monotonic()
            return session

    @staticmethod
    def lock_session(session: Session) -> None:
        """Take the session's handle for one request.

        Raises:
            ServerError: 373 SESSION_IS_LOCKED while another request uses it (as ClickHouse).
        """
        if not session.handle.lock.acquire(timeout=0.5):
            raise ServerError(SESSION_IS_LOCKED,
                              f"Session {session.id} is locked by a concurrent client.")

    def expire_sessions(self) -> None:
        """Close sessions idle for longer than their timeout."""
        now = time.monotonic()
        with self._sessions_lock:
            expired = [s for s in self._sessions.values()
                       if now - s.last_used > s.timeout_s and not s.handle.lock.locked()]
            for session in expired:
                del self._sessions[session.id]
        for session in expired:
            session.handle.close()

    def kill(self, query_id: str) -> None:
        """Cancel the running statement tagged with `query_id` (see `tag_statement`)."""
        handle = self.new_handle()
        try:
            handle.query(f"KILL QUERY WHERE query LIKE {quote_value(_tag(query_id) + '%')} "
                         "ASYNC")
        except ServerError:
            logger.warning("could not cancel query %s", query_id, exc_info=True)
        finally:
            handle.close()

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    def close(self) -> None:
        """Close every session and the engine; data is already on disk."""
        with self._sessions_lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.handle.close()
        if self._root is not None:
            self._root.close()
            self._root = None
