"""ClickHouse's HTTP interface in front of the embedded engine.

A `ThreadingHTTPServer` (HTTP/1.1, keep-alive): each connection has a thread, so
`/ping` and `/metrics` answer while long queries run, and queries on different
handles run concurrently inside chDB. SIGTERM stops accepting, lets requests in
flight finish (up to `stop_timeout_s`), then closes the engine.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from deploy.clickhouse.auth import authenticate, credentials
from deploy.clickhouse.codecs import choose_encoding, decode_body, encode_body
from deploy.clickhouse.engine import Engine
from deploy.clickhouse.errors import (
    NOT_IMPLEMENTED,
    QUERY_IS_TOO_LARGE,
    TOO_MANY_SIMULTANEOUS_QUERIES,
    ServerError,
)
from deploy.clickhouse.metrics import ServerMetrics
from deploy.clickhouse.query import Request, execute
from deploy.settings import FlywheelSettings

logger = logging.getLogger(__name__)

KEEP_ALIVE_TIMEOUT_S = 10
_CONTENT_TYPES = {
    "TabSeparated": "text/tab-separated-values; charset=UTF-8",
    "TSV": "text/tab-separated-values; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "JSON": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
    "JSONCompact": "application/json; charset=UTF-8",
}


class ClickHouseHTTPServer(ThreadingHTTPServer):
    """The listening server; owns the engine, the metrics and the open connections."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, settings: FlywheelSettings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = ServerMetrics()
        self.stopping = threading.Event()
        self._connections: dict[socket.socket, bool] = {}  # socket -> busy
        self._lock = threading.Condition()
        ch = settings.clickhouse
        super().__init__((ch.host, ch.port), _Handler)

    # -- connection bookkeeping ----------------------------------------------------

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            too_many = len(self._connections) >= self.settings.clickhouse.max_connections
        if too_many:
            body = (f"Code: {TOO_MANY_SIMULTANEOUS_QUERIES}. DB::Exception: Too many connections "
                    f"(max_connections={self.settings.clickhouse.max_connections}). "
                    "(TOO_MANY_SIMULTANEOUS_QUERIES)\n").encode()
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
                                b"X-ClickHouse-Exception-Code: 202\r\nContent-Length: "
                                + str(len(body)).encode() + b"\r\n\r\n" + body)
            finally:
                self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def track(self, sock: socket.socket, *, busy: bool | None) -> None:
        with self._lock:
            if busy is None:
                self._connections.pop(sock, None)
            else:
                self._connections[sock] = busy
            self._lock.notify_all()

    def busy_count(self) -> int:
        with self._lock:
            return sum(self._connections.values())

    def drain(self, *, timeout_s: float) -> None:
        """Close idle keep-alive connections and wait for busy ones to finish."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                for sock, busy in list(self._connections.items()):
                    if not busy:
                        try:
                            sock.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                if not any(self._connections.values()) or time.monotonic() >= deadline:
                    break
                self._lock.wait(timeout=0.1)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ClickHouse-Flywheel"
    timeout = KEEP_ALIVE_TIMEOUT_S + 5
    server: ClickHouseHTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without NODELAY, Nagle plus the
        # client's delayed ACK adds ~40 ms to every small response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, busy=False)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, busy=None)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        logger.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        self._serve()

    def do_POST(self) -> None:  # noqa: N802
        self._serve()

    def _serve(self) -> None:
        self.server.track(self.connection, busy=True)
        started = time.perf_counter()
        metrics = self.server.metrics
        metrics.in_flight.inc()
        path = urlsplit(self.path).path
        endpoint = path if path in ("/ping", "/metrics", "/") else "other"
        status = 500
        try:
            status = self._route(path)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            metrics.in_flight.dec()
            metrics.requests.labels(endpoint, str(status)).inc()
            metrics.duration.labels(endpoint).observe(time.perf_counter() - started)
            if self.server.stopping.is_set():
                self.close_connection = True
            self.server.track(self.connection, busy=False)

    def _route(self, path: str) -> int:
        if path in ("/ping", "/replicas_status"):
            return self._send(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
        if path == "/metrics":
            self.server.metrics.sessions.set(self.server.engine.session_count)
            return self._send(200, self.server.metrics.render(),
                              {"Content-Type": self.server.metrics.content_type})
        if path not in ("/", "/query"):
            return self._send(404, b"There is no handle " + path.encode() + b"\n",
                              {"Content-Type": "text/plain; charset=UTF-8"})
        params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        query_id = params.get("query_id") or str(uuid.uuid4())
        try:
            return self._query(params, query_id)
        except ServerError as e:
            return self._send_error(e, query_id)
        except Exception as e:  # a bug of ours: still answer like ClickHouse does
            logger.exception("query %s failed unexpectedly", query_id)
            return self._send_error(ServerError(1001, f"std::exception: {e}",
                                                name="STD_EXCEPTION"), query_id)

    def _query(self, params: dict[str, str], query_id: str) -> int:
        ch = self.server.settings.clickhouse
        user, password = credentials(self.headers, params)
        body = self._read_body(max_size_bytes=ch.max_body_size_bytes)
        if self.command == "GET" and not params.get("query") and not body:
            return self._send(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
        account = authenticate(user, password, ch.users)
        if params.get("decompress") in ("1", "true"):
            raise ServerError(NOT_IMPLEMENTED, "decompress=1 (ClickHouse's native block "
                              "compression) is not supported; send a Content-Encoding instead")
        body = decode_body(body, self.headers.get("Content-Encoding", ""),
                           max_size_bytes=ch.max_body_size_bytes)
        text = params.get("query", "").encode()
        if text and body:
            text += b"\n" + body
        elif body:
            text = body
        result = execute(self.server.engine, Request(params=params, text=text,
                                                     method=self.command), account)
        outcome = result.outcome
        self.server.metrics.written_rows.inc(outcome.written_rows)
        headers = {
            "Content-Type": _CONTENT_TYPES.get(result.format, "application/octet-stream"),
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Format": result.format,
            "X-ClickHouse-Timezone": self.server.engine.timezone,
            "X-ClickHouse-Summary": json.dumps(outcome.summary(), separators=(",", ":")),
        }
        data = outcome.data
        if params.get("enable_http_compression") == "1" and data:
            encoding = choose_encoding(self.headers.get("Accept-Encoding", ""))
            if encoding:
                level = params.get("http_zlib_compression_level")
                data = encode_body(data, encoding, level=int(level) if level else None)
                headers["Content-Encoding"] = encoding
        return self._send(200, data, headers)

    def _read_body(self, *, max_size_bytes: int) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts, total = [], 0
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > max_size_bytes:
                    self.close_connection = True
                    raise _too_large(max_size_bytes)
                parts.append(self.rfile.read(size))
                self.rfile.readline(1024)
            body = b"".join(parts)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            if length > max_size_bytes:
                self.close_connection = True
                raise _too_large(max_size_bytes)
            body = self.rfile.read(length) if length else b""
        self.server.metrics.received_bytes.inc(len(body))
        return body

    def _send_error(self, error: ServerError, query_id: str) -> int:
        self.server.metrics.errors.labels(str(error.code)).inc()
        logger.info("query %s failed: %s", query_id, error.message.splitlines()[0][:300])
        body = error.body(version=self.server.engine.version).encode()
        return self._send(error.http_status, body, {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-ClickHouse-Exception-Code": str(error.code),
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": self.server.engine.timezone,
        })

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> int:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("X-ClickHouse-Server-Display-Name", "flywheel-chdb")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection or self.server.stopping.is_set():
            self.send_header("Connection", "close")
        else:
            self.send_header("Keep-Alive", f"timeout={KEEP_ALIVE_TIMEOUT_S}")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.server.metrics.sent_bytes.inc(len(body))
        return status


def _too_large(max_size_bytes: int) -> ServerError:
    return ServerError(QUERY_IS_TOO_LARGE, f"The request body is larger than "
                       f"max_body_size_bytes={max_size_bytes}; send smaller batches or raise "
                       "clickhouse.max_body_size_bytes", http_status=413)


def serve(settings: FlywheelSettings, *, ready: threading.Event | None = None) -> None:
    """Open the engine under `<state_dir>/clickhouse/` and serve until SIGTERM or SIGINT.

    Raises:
        EngineStartError: the data folder is owned by another process.
        OSError: the port is taken.
    """
    engine = Engine(path=settings.state_path / "clickhouse" / "chdb",
                    database=settings.clickhouse.database)
    engine.open()
    server = ClickHouseHTTPServer(settings, engine)
    reaper_stop = threading.Event()

    def reap() -> None:
        while not reaper_stop.wait(5.0):
            engine.expire_sessions()

    threading.Thread(target=reap, name="session-reaper", daemon=True).start()

    def stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("signal %d: no new connections; finishing requests in flight", signum)
        server.stopping.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    logger.info("ClickHouse HTTP interface on http://%s:%d (chDB %s)", settings.clickhouse.host,
                settings.clickhouse.port, engine.version)
    if ready is not None:
        ready.set()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        server.drain(timeout_s=settings.stop_timeout_s)
        reaper_stop.set()
        engine.close()
        logger.info("ClickHouse server stopped")
