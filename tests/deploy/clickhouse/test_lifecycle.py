"""Servers of our own: restart, kill -9, SIGTERM with a query in flight, body limit."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from tests.deploy.clickhouse.conftest import OwnServer
from tests.deploy.clickhouse.test_client import COLUMNS, SCHEMA, make_rows

pytestmark = pytest.mark.integration


def test_a_restart_keeps_the_data(own_server: Callable[..., OwnServer]) -> None:
    server = own_server()
    server.start()
    with server.client() as client:
        client.command(f"CREATE TABLE events {SCHEMA}")
        client.insert("events", make_rows(10_000), column_names=COLUMNS)
    assert server.stop(signal.SIGTERM) == 0
    server.start()
    with server.client() as client:
        assert client.command("SELECT count(), max(id) FROM events") == ["10000", "9999"]


def test_kill_9_keeps_every_acknowledged_insert(own_server: Callable[..., OwnServer]) -> None:
    server = own_server()
    server.start()
    acknowledged = 0
    with server.client() as client:
        client.command(f"CREATE TABLE events {SCHEMA}")
        for batch in range(5):
            client.insert("events", make_rows(5000, start=batch * 5000), column_names=COLUMNS)
            acknowledged += 5000
    server.stop(signal.SIGKILL)
    server.start()
    with server.client() as client:
        assert client.command("SELECT count() FROM events") == acknowledged


def test_sigterm_lets_a_query_in_flight_finish_and_exits_cleanly(
    own_server: Callable[..., OwnServer],
) -> None:
    server = own_server()
    server.start()
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(server.post("SELECT sleep(2), 7")))
    thread.start()
    time.sleep(0.5)
    assert server.stop(signal.SIGTERM) == 0
    thread.join()
    assert answers[0].status_code == 200 and answers[0].text == "0\t7\n"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/ping")


def test_a_body_over_the_limit_is_refused_with_413(own_server: Callable[..., OwnServer]) -> None:
    server = own_server(max_body_size_bytes=64 * 1024)
    server.start()
    server.post("CREATE TABLE t (s String) ENGINE = MergeTree ORDER BY s")
    response = server.post("INSERT INTO t FORMAT TSV", content=b"x" * 100_000 + b"\n")
    assert response.status_code == 413
    assert response.headers["X-ClickHouse-Exception-Code"] == "229"

    def chunks():  # no Content-Length: the limit applies while reading
        for _ in range(100):
            yield b"y" * 1000 + b"\n"

    chunked = server.post("INSERT INTO t FORMAT TSV", content=chunks())
    assert chunked.status_code == 413
    assert server.post("SELECT count() FROM t").text == "0\n"
