"""ClickHouse's HTTP interface in front of the embedded engine, on uvicorn and Starlette.

uvicorn parses HTTP (h11) and owns the sockets, with the deadlines and connection
caps of `protocol.py`; Starlette routes and parses multipart forms (python-multipart).
chDB calls block, so each runs on a worker thread, at most
`clickhouse.max_concurrent_queries` at once (more wait up to `queue_timeout_s`),
while the event loop keeps answering `/ping` and `/metrics`.

Bodies are read as they arrive: `INSERT ... FORMAT` and `INSERT ... VALUES` data go
to the engine block by block, so a large insert never sits whole in memory, and a
compressed body is inflated piece by piece against the cap. Results of SELECT
stream out as the engine produces them; an error after the first bytes is written
in ClickHouse's tagged form (`X-ClickHouse-Exception-Tag`), so clients raise it. A
query is cancelled when its client goes away. SIGTERM stops accepting, lets requests
in flight finish (up to `stop_timeout_s`), then closes the engine.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import uvicorn
from starlette.applications import Starlette
from starlette.formparsers import MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from deploy.clickhouse.auth import Accounts, credentials
from deploy.clickhouse.codecs import choose_encoding, encode_body, iter_decoded
from deploy.clickhouse.engine import Engine, Handle, Outcome, tag_statement
from deploy.clickhouse.errors import (
    BAD_ARGUMENTS,
    QUERY_IS_TOO_LARGE,
    TOO_MANY_SIMULTANEOUS_QUERIES,
    ServerError,
)
from deploy.clickhouse.metrics import ServerMetrics
from deploy.clickhouse.native_compression import compress_blocks, iter_decompressed
from deploy.clickhouse.policy import StatementPolicy
from deploy.clickhouse.protocol import ConnectionLimits, protocol_class
from deploy.clickhouse.query import RESULT_KINDS, Execution, Executor, ExternalTable
from deploy.clickhouse.query import Request as QueryRequest
from deploy.clickhouse.statements import Statement, split
from deploy.settings import ClickHouseUser, FlywheelSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")

_CONTENT_TYPES = {
    "TabSeparated": "text/tab-separated-values; charset=UTF-8",
    "TSV": "text/tab-separated-values; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "JSON": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
    "JSONCompact": "application/json; charset=UTF-8",
}
# Results up to this size are sent whole, with their final summary; longer ones stream.
_BUFFER_BYTES = 1 << 20
# Where the statement ends is looked for in the first bytes of a body.
_HEAD_BYTES = 64 << 10
_HEAD_MAX_BYTES = 1 << 20
# A statement without data (a SELECT, DDL) is at most this long; ClickHouse's own
# max_query_size is 256 KiB.
_MAX_STATEMENT_BYTES = 16 << 20
_QUERY_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")


class ClickHouseFront:
    """The ASGI application: routes, and the state every request shares."""

    def __init__(self, settings: FlywheelSettings, engine: Engine) -> None:
        ch = settings.clickhouse
        self.settings = settings
        self.engine = engine
        self.metrics = ServerMetrics()
        self.accounts = Accounts(settings)
        self.executor = Executor(engine, StatementPolicy(into_outfile_dir=ch.into_outfile_dir))
        self.queries = anyio.CapacityLimiter(ch.max_concurrent_queries)
        # One thread at a time per running query, plus room for the quick calls.
        self.threads = anyio.CapacityLimiter(ch.max_concurrent_queries * 2 + 8)
        self.running: dict[str, int] = {}
        self.app = Starlette(routes=[
            Route("/ping", self.ping, methods=["GET", "HEAD"]),
            Route("/replicas_status", self.ping, methods=["GET", "HEAD"]),
            Route("/metrics", self.metrics_page, methods=["GET"]),
            Route("/", self.query, methods=["GET", "POST", "HEAD"]),
            Route("/query", self.query, methods=["GET", "POST"]),
        ])
        self.app.add_exception_handler(404, self._not_found)
        self.app.add_exception_handler(405, self._not_allowed)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    # -- plain endpoints ---------------------------------------------------------------

    async def ping(self, request: Request) -> Response:
        self._count(request, "/ping", 200, time.perf_counter())
        return Response(b"Ok.\n", headers=self._common(), media_type="text/html; charset=UTF-8")

    async def metrics_page(self, request: Request) -> Response:
        self.metrics.sessions.set(self.engine.session_count)
        self._count(request, "/metrics", 200, time.perf_counter())
        return Response(self.metrics.render(), media_type=self.metrics.content_type)

    async def _not_found(self, request: Request, _exc: Exception) -> Response:
        self._count(request, "other", 404, time.perf_counter())
        return Response(b"There is no handle " + request.url.path.encode()[:200] + b"\n",
                        status_code=404, headers=self._common(),
                        media_type="text/plain; charset=UTF-8")

    async def _not_allowed(self, request: Request, _exc: Exception) -> Response:
        self._count(request, "other", 405, time.perf_counter())
        return Response(b"Method not allowed\n", status_code=405, headers=self._common(),
                        media_type="text/plain; charset=UTF-8")

    # -- queries -------------------------------------------------------------------------

    async def query(self, request: Request) -> Response:
        started = time.perf_counter()
        params = dict(request.query_params)
        query_id = params.get("query_id") or str(uuid.uuid4())
        if not _QUERY_ID.match(query_id):
            query_id = str(uuid.uuid4())
        self.metrics.in_flight.inc()
        try:
            response = await self._query(request, params, query_id)
        except ServerError as e:
            response = self._error(e, query_id)
        except ClientDisconnect:
            response = Response(b"", status_code=499)
        except Exception as e:  # a bug of ours: still answer like ClickHouse does
            logger.exception("query %s failed unexpectedly", query_id)
            response = self._error(ServerError(1001, f"std::exception: {e}",
                                               name="STD_EXCEPTION"), query_id)
        finally:
            self.metrics.in_flight.dec()
        if not isinstance(response, StreamingResponse):
            self._count(request, "/", response.status_code, started)
        return response

    async def _query(self, request: Request, params: dict[str, str],
                     query_id: str) -> Response:
        try:
            user, password = credentials(request.headers, params)
        except ServerError:
            self.metrics.auth_failures.labels("").inc()
            logger.warning("malformed credentials from %s",
                           request.client.host if request.client else "?")
            raise
        content_type = request.headers.get("content-type", "")
        form_text: bytes = b""
        external: tuple[ExternalTable, ...] = ()
        pieces = self._body(request)
        if content_type.lower().startswith("multipart/form-data"):
            # The form takes the whole body: `pieces` is left empty for the statement.
            form_text, external = await self._read_form(request, pieces, params)
        text = params.get("query", "").encode("utf-8", "surrogateescape") or form_text
        if request.method in ("GET", "HEAD") and not text:
            return Response(b"Ok.\n", headers=self._common(),
                            media_type="text/html; charset=UTF-8")
        try:
            account = self.accounts.authenticate(user, password)
        except ServerError:
            # Only account names as labels: names an attacker makes up would grow the
            # metric without bound.
            self.metrics.auth_failures.labels(
                user if self.accounts.known(user) else "(unknown)").inc()
            logger.warning("authentication failed for user %r from %s", user[:64],
                           request.client.host if request.client else "?")
            raise
        statement, data = await self._statement(text, pieces)
        if not statement.sql.strip():
            raise ServerError(62, "Empty query", name="SYNTAX_ERROR")
        query_request = QueryRequest(
            params=params, method=request.method,
            header_format=request.headers.get("x-clickhouse-format"),
            header_database=request.headers.get("x-clickhouse-database"),
            external_tables=external)
        release = await self._admit(account)
        try:
            return await self._run(request, query_request, statement, data, account, query_id,
                                   release)
        except BaseException:
            release()
            raise

    async def _run(self, request: Request, query: QueryRequest, statement: Statement,
                   data: AsyncIterator[bytes] | None, account: ClickHouseUser, query_id: str,
                   release: Callable[[], None]) -> Response:
        fmt = statement.output_format(query.default_format)
        tagged = tag_statement(statement.sql, query_id=query_id, user=account.name)
        execution = Execution(self.executor, query, account, statement, sql=tagged, fmt=fmt,
                              buffer_bytes=_BUFFER_BYTES)
        streaming = False
        try:
            if statement.is_insert_with_data:
                handle = await self._thread(execution.prepare)
                outcome = await self._insert(handle, statement, data)
                self.metrics.written_rows.inc(outcome.written_rows)
                return self._done(outcome, query_id, fmt=None)
            whole = query.params.get("enable_http_compression") == "1" or "1" in (
                query.params.get("wait_end_of_query"),
                query.params.get("send_progress_in_http_headers"))
            outcome, complete = await self._watched(request, query_id, execution.start,
                                                    whole=whole)
            if complete:
                has_result = statement.kind in RESULT_KINDS or bool(outcome.data)
                return self._done(outcome, query_id, fmt=fmt if has_result else None,
                                  request=request)
            streaming = True
            return self._stream(request, execution, outcome.data, query, fmt, query_id, release)
        finally:
            if not streaming:
                if not execution.closed:
                    with anyio.CancelScope(shield=True):
                        if execution.stream is not None and not execution.stream.done:
                            await self._thread(self.engine.kill, query_id)
                        await self._thread(execution.close)
                release()

    def _stream(self, request: Request, execution: Execution, first: bytes, query: QueryRequest,
                fmt: str, query_id: str, release: Callable[[], None]) -> StreamingResponse:
        """A long result, streamed, with the exception tag for errors from here on."""
        native = query.params.get("compress") in ("1", "true")
        tag = secrets.token_hex(8)
        headers = self._result_headers(query_id, fmt)
        headers["X-ClickHouse-Exception-Tag"] = tag
        started = time.perf_counter()

        async def body() -> AsyncIterator[bytes]:
            status = 200
            ended = False
            try:
                yield compress_blocks(first) if native else first
                while True:
                    block = await self._thread(execution.next_block)
                    if block is None:
                        ended = True
                        break
                    if native:
                        block = compress_blocks(block)
                    self.metrics.sent_bytes.inc(len(block))
                    yield block
            except ServerError as e:
                ended = True
                status = e.http_status
                self.metrics.errors.labels(str(e.code)).inc()
                message = e.body(version=self.engine.version).encode()
                yield (b"__exception__\r\n" + tag.encode() + b"\r\n" + message
                       + str(len(message)).encode() + b" " + tag.encode()
                       + b"\r\n__exception__\r\n")
            finally:
                with anyio.CancelScope(shield=True):
                    if not ended:  # the client left mid-stream
                        await self._thread(self.engine.kill, query_id)
                    await self._thread(execution.close)
                release()
                self._count(request, "/", status, started)

        return StreamingResponse(body(), headers=headers,
                                 media_type=_CONTENT_TYPES.get(fmt, "application/octet-stream"))

    async def _insert(self, handle: Handle, statement: Statement,
                      data: AsyncIterator[bytes] | None) -> Outcome:
        sql = statement.sql.decode("utf-8", "surrogateescape")
        fmt = statement.insert_format or ""

        async def chunks() -> AsyncIterator[bytes]:
            if statement.data:
                yield statement.data
            if data is not None:
                batch: list[bytes] = []
                size = 0
                async for piece in data:
                    batch.append(piece)
                    size += len(piece)
                    if size >= _BUFFER_BYTES:
                        yield b"".join(batch)
                        batch, size = [], 0
                if batch:
                    yield b"".join(batch)

        inserter = await self._thread(handle.start_insert, sql, fmt)
        try:
            async for chunk in chunks():
                if chunk:
                    await self._thread(inserter.append, chunk)
            return await self._thread(inserter.finish)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._thread(inserter.cancel)
            raise

    # -- request bodies ----------------------------------------------------------------

    async def _statement(self, text: bytes,
                         pieces: AsyncIterator[bytes]) -> tuple[Statement, AsyncIterator[bytes]
                                                                | None]:
        """The statement and, for inserts, the rest of the body still to stream."""
        if text:
            head = split(text)
            if head.is_insert_with_data and not head.data.strip():
                return Statement(sql=head.sql, kind=head.kind,
                                 insert_format=head.insert_format), pieces
        prefix = bytearray()
        iterator = pieces.__aiter__()
        ended = False
        while len(prefix) < _HEAD_BYTES or (len(prefix) < _HEAD_MAX_BYTES and not ended):
            try:
                prefix += await iterator.__anext__()
            except StopAsyncIteration:
                ended = True
                break
            if len(prefix) >= _HEAD_BYTES:
                candidate = split((text + b"\n" + bytes(prefix)) if text else bytes(prefix))
                if candidate.is_insert_with_data and candidate.data:
                    break
        whole = (text + b"\n" + bytes(prefix)) if text and prefix else (text or bytes(prefix))
        statement = split(whole)
        if statement.is_insert_with_data:
            return statement, None if ended else iterator
        rest = bytearray()
        if not ended:
            async for piece in iterator:
                rest += piece
                if len(whole) + len(rest) > _MAX_STATEMENT_BYTES:
                    raise ServerError(QUERY_IS_TOO_LARGE, f"A statement without data is at most "
                                      f"{_MAX_STATEMENT_BYTES} bytes; send data with INSERT ... "
                                      "FORMAT", http_status=413)
        if rest:
            statement = split(whole + bytes(rest))
        if len(statement.sql) > _MAX_STATEMENT_BYTES:
            raise ServerError(QUERY_IS_TOO_LARGE, f"A statement without data is at most "
                              f"{_MAX_STATEMENT_BYTES} bytes", http_status=413)
        return statement, None

    async def _body(self, request: Request) -> AsyncIterator[bytes]:
        """The request body, decompressed, in pieces; raw and inflated bytes both capped."""
        ch = self.settings.clickhouse
        encoding = request.headers.get("content-encoding", "").strip().lower()
        if request.query_params.get("decompress") in ("1", "true"):
            encoding = "clickhouse-native"  # ClickHouse's compressed blocks
        stream = request.stream().__aiter__()
        raw = 0
        compressed = bytearray()
        while True:
            try:
                with anyio.fail_after(ch.body_timeout_s):
                    chunk = await stream.__anext__()
            except StopAsyncIteration:
                break
            except TimeoutError as e:
                raise ServerError(209, f"The request body stalled for more than "
                                  f"clickhouse.body_timeout_s={ch.body_timeout_s}",
                                  name="SOCKET_TIMEOUT", http_status=400) from e
            raw += len(chunk)
            if raw > ch.max_body_size_bytes:
                raise _too_large(ch.max_body_size_bytes)
            self.metrics.received_bytes.inc(len(chunk))
            if encoding in ("", "identity"):
                if chunk:
                    yield chunk
            else:
                compressed += chunk
        if encoding in ("", "identity") or not compressed:
            return
        decoded = (iter_decompressed(bytes(compressed), max_size_bytes=ch.max_body_size_bytes)
                   if encoding == "clickhouse-native" else
                   iter_decoded(bytes(compressed), encoding,
                                max_size_bytes=ch.max_body_size_bytes))
        del compressed
        while True:
            piece = await self._thread(next, decoded, None)
            if piece is None:
                return
            yield piece

    async def _read_form(self, request: Request, pieces: AsyncIterator[bytes],
                         params: dict[str, str]) -> tuple[bytes, tuple[ExternalTable, ...]]:
        """The `query` field and external data tables of a multipart/form-data body,
        parsed from the body as it is read (capped and decompressed like any other)."""
        ch = self.settings.clickhouse
        parser = MultiPartParser(request.headers, pieces,  # type: ignore[arg-type]
                                 max_files=64, max_fields=1024,
                                 max_part_size=ch.max_body_size_bytes)
        try:
            form = await parser.parse()
        except ServerError:
            raise
        except Exception as e:
            raise ServerError(BAD_ARGUMENTS, f"Malformed multipart/form-data body: {e}",
                              http_status=400) from e
        fields: dict[str, str] = {}
        tables = []
        try:
            for name, value in form.multi_items():
                if isinstance(value, str):
                    fields[name] = value
            for name, value in form.multi_items():
                if isinstance(value, str):
                    continue
                structure = params.get(f"{name}_structure") or fields.get(f"{name}_structure")
                types = params.get(f"{name}_types") or fields.get(f"{name}_types")
                if not structure and types:
                    structure = ", ".join(f"_{i + 1} {t.strip()}"
                                          for i, t in enumerate(types.split(",")))
                if not structure:
                    raise ServerError(BAD_ARGUMENTS, f"External table {name!r} needs "
                                      f"{name}_structure (or {name}_types)")
                fmt = params.get(f"{name}_format") or fields.get(f"{name}_format") or \
                    "TabSeparated"
                tables.append(ExternalTable(name=name, structure=structure, format=fmt,
                                            data=await value.read()))
        finally:
            await form.close()
        for key, value in fields.items():
            if key != "query" and not key.endswith(("_structure", "_format", "_types")):
                params.setdefault(key, value)
        return fields.get("query", "").encode("utf-8", "surrogateescape"), tuple(tables)

    # -- admission, threads, disconnects ---------------------------------------------

    async def _admit(self, account: ClickHouseUser) -> Callable[[], None]:
        ch = self.settings.clickhouse
        if account.max_concurrent_queries and \
                self.running.get(account.name, 0) >= account.max_concurrent_queries:
            raise ServerError(TOO_MANY_SIMULTANEOUS_QUERIES, f"{account.name}: Too many "
                              f"simultaneous queries for this account (max_concurrent_queries="
                              f"{account.max_concurrent_queries}); retry later", http_status=503)
        borrower = object()
        try:
            with anyio.fail_after(ch.queue_timeout_s):
                await self.queries.acquire_on_behalf_of(borrower)
        except TimeoutError as e:
            raise ServerError(TOO_MANY_SIMULTANEOUS_QUERIES, f"Too many simultaneous queries "
                              f"(max_concurrent_queries={ch.max_concurrent_queries}); waited "
                              f"{ch.queue_timeout_s} s. Retry later", http_status=503) from e
        self.running[account.name] = self.running.get(account.name, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.running[account.name] -= 1
                self.queries.release_on_behalf_of(borrower)

        return release

    async def _thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.threads)

    async def _watched(self, request: Request, query_id: str, fn: Callable[..., T],
                       **kwargs: Any) -> T:
        """`fn(**kwargs)` on a worker thread; if the client disconnects meanwhile, the
        statement is KILLed (so `fn` returns soon) and ClientDisconnect is raised."""
        result: list[T] = []
        failure: list[BaseException] = []
        gone = False
        async with anyio.create_task_group() as group:
            async def watch() -> None:
                nonlocal gone
                while True:
                    message = await request.receive()
                    if message["type"] == "http.disconnect":
                        gone = True
                        await self._thread(self.engine.kill, query_id)
                        return

            async def run() -> None:
                try:
                    result.append(await self._thread(lambda: fn(**kwargs)))
                except Exception as e:  # raised below, not as an ExceptionGroup
                    failure.append(e)
                group.cancel_scope.cancel()

            group.start_soon(watch)
            group.start_soon(run)
        if gone and not result:
            raise ClientDisconnect()
        if failure:
            raise failure[0]
        return result[0]

    # -- responses ------------------------------------------------------------------------

    def _common(self) -> dict[str, str]:
        return {"X-ClickHouse-Server-Display-Name": "flywheel-chdb",
                "X-ClickHouse-Timezone": self.engine.timezone}

    def _result_headers(self, query_id: str, fmt: str | None) -> dict[str, str]:
        headers = {**self._common(), "X-ClickHouse-Query-Id": query_id}
        if fmt is not None:
            headers["X-ClickHouse-Format"] = fmt
        return headers

    def _done(self, outcome: Outcome, query_id: str, *, fmt: str | None,
              request: Request | None = None) -> Response:
        headers = self._result_headers(query_id, fmt)
        summary = outcome.summary()
        headers["X-ClickHouse-Summary"] = json.dumps(summary, separators=(",", ":"))
        if request is not None and \
                request.query_params.get("send_progress_in_http_headers") == "1":
            # The result was waited for whole, so one header carries the final progress.
            progress = {k: summary[k] for k in ("read_rows", "read_bytes", "written_rows",
                                                "written_bytes", "total_rows_to_read",
                                                "result_rows", "result_bytes", "elapsed_ns")}
            headers["X-ClickHouse-Progress"] = json.dumps(progress, separators=(",", ":"))
        data = outcome.data
        if request is not None and request.query_params.get("compress") in ("1", "true") \
                and data:
            data = compress_blocks(data)
        elif request is not None and \
                request.query_params.get("enable_http_compression") == "1" and data:
            encoding = choose_encoding(request.headers.get("accept-encoding", ""))
            if encoding:
                level = _compression_level(request.query_params.get("http_zlib_compression_level"))
                data = encode_body(data, encoding, level=level)
                headers["Content-Encoding"] = encoding
        self.metrics.sent_bytes.inc(len(data))
        media = _CONTENT_TYPES.get(fmt or "", "text/plain; charset=UTF-8")
        return Response(data, headers=headers, media_type=media)

    def _error(self, error: ServerError, query_id: str) -> Response:
        self.metrics.errors.labels(str(error.code)).inc()
        logger.info("query %s failed: %s", query_id, error.message.splitlines()[0][:300]
                    if error.message else error.code)
        body = error.body(version=self.engine.version).encode("utf-8", "replace")
        headers = {**self._common(), "X-ClickHouse-Exception-Code": str(error.code),
                   "X-ClickHouse-Query-Id": query_id}
        if error.http_status == 503:
            headers["Retry-After"] = "1"
        return Response(body, status_code=error.http_status, headers=headers,
                        media_type="text/plain; charset=UTF-8")

    def _count(self, request: Request, endpoint: str, status: int, started: float) -> None:
        self.metrics.requests.labels(endpoint, str(status)).inc()
        self.metrics.duration.labels(endpoint).observe(time.perf_counter() - started)


def _compression_level(raw: str | None) -> int | None:
    if not raw:
        return None
    try:
        level = int(raw)
    except ValueError:
        level = -1
    if not 1 <= level <= 9:
        raise ServerError(BAD_ARGUMENTS, f"http_zlib_compression_level must be an integer from "
                          f"1 to 9, got {raw[:20]!r}", http_status=400)
    return level


def _too_large(max_size_bytes: int) -> ServerError:
    return ServerError(QUERY_IS_TOO_LARGE, f"The request body is larger than "
                       f"max_body_size_bytes={max_size_bytes}; send smaller batches or raise "
                       "clickhouse.max_body_size_bytes", http_status=413)


class _Server(uvicorn.Server):
    """uvicorn's server, exiting 0 after a graceful stop on SIGTERM or SIGINT.

    uvicorn re-raises the signal once it has shut down, so the process would die by
    it (exit -15) although every request in flight finished; the supervisor reads
    that as a crash.
    """

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def serve(settings: FlywheelSettings) -> None:
    """Open the engine under `<state_dir>/clickhouse/` and serve until SIGTERM or SIGINT.

    Raises:
        EngineStartError: the data folder is owned by another process.
        OSError: the port is taken.
    """
    import threading

    ch = settings.clickhouse
    engine = Engine(path=settings.state_path / "clickhouse" / "chdb", database=ch.database)
    engine.open()
    front = ClickHouseFront(settings, engine)
    limits = ConnectionLimits(header_timeout_s=ch.header_timeout_s,
                              max_connections=ch.max_connections,
                              max_per_client=ch.max_connections_per_client,
                              metrics=front.metrics)
    config = uvicorn.Config(
        front, host=ch.host, port=ch.port, http=protocol_class(limits), lifespan="off",
        loop="asyncio", log_level="warning", access_log=False, server_header=False,
        date_header=True, timeout_keep_alive=ch.keep_alive_timeout_s,
        timeout_graceful_shutdown=int(settings.stop_timeout_s),
        h11_max_incomplete_event_size=64 * 1024, backlog=512)
    server = _Server(config)
    reaper_stop = threading.Event()

    def reap() -> None:
        while not reaper_stop.wait(5.0):
            engine.expire_sessions()

    threading.Thread(target=reap, name="session-reaper", daemon=True).start()
    logger.info("ClickHouse HTTP interface on http://%s:%d (chDB %s)", ch.host, ch.port,
                engine.version)
    try:
        server.run()
    finally:
        reaper_stop.set()
        engine.close()
        logger.info("ClickHouse server stopped")
