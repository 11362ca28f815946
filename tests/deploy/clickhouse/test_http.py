"""The plain HTTP interface, as curl or any HTTP client sees it."""

from __future__ import annotations

import gzip
import json
import threading
import time

import httpx
import pytest

from deploy.clickhouse.passwords import stored_password
from deploy.settings import FlywheelSettings
from tests.deploy.clickhouse.conftest import admin_auth, analyst_auth

pytestmark = pytest.mark.integration


def post(settings: FlywheelSettings, query: str, **kwargs: object) -> httpx.Response:
    kwargs.setdefault("auth", admin_auth(settings))
    return httpx.post(settings.clickhouse.http_url, params={"query": query}, timeout=30,
                      **kwargs)  # type: ignore[arg-type]


def test_a_jsoneachrow_insert_and_a_tsv_select_round_trip(
    clickhouse: FlywheelSettings, unique_name: str
) -> None:
    assert post(clickhouse, f"CREATE TABLE {unique_name} (id UInt32, name String) "
                "ENGINE = MergeTree ORDER BY id").status_code == 200
    rows = "\n".join(json.dumps({"id": i, "name": f"n{i} ü"}) for i in range(3))
    inserted = post(clickhouse, f"INSERT INTO {unique_name} FORMAT JSONEachRow", content=rows)
    assert inserted.status_code == 200, inserted.text
    assert json.loads(inserted.headers["X-ClickHouse-Summary"])["written_rows"] == "3"
    selected = httpx.get(clickhouse.clickhouse.http_url, auth=admin_auth(clickhouse),
                         params={"query": f"SELECT id, name FROM {unique_name} ORDER BY id"})
    assert selected.status_code == 200
    assert selected.headers["X-ClickHouse-Format"] == "TabSeparated"
    assert selected.text == "0\tn0 ü\n1\tn1 ü\n2\tn2 ü\n"


def test_the_query_can_come_whole_in_the_body_with_a_gzip_content_encoding(
    clickhouse: FlywheelSettings, unique_name: str
) -> None:
    post(clickhouse, f"CREATE TABLE {unique_name} (a UInt8) ENGINE = MergeTree ORDER BY a")
    body = gzip.compress(f"INSERT INTO {unique_name} FORMAT CSV\n1\n2\n".encode())
    response = httpx.post(clickhouse.clickhouse.http_url, content=body,
                          auth=admin_auth(clickhouse), headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert post(clickhouse, f"SELECT sum(a) FROM {unique_name}").text == "3\n"


def test_a_gzip_response_is_sent_when_http_compression_is_enabled(
    clickhouse: FlywheelSettings,
) -> None:
    response = httpx.post(
        clickhouse.clickhouse.http_url,
        params={"query": "SELECT number FROM numbers(1000)", "enable_http_compression": "1"},
        headers={"Accept-Encoding": "gzip"}, auth=admin_auth(clickhouse),
    )
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.text.splitlines()[-1] == "999"  # httpx decoded it


def test_a_bad_query_answers_code_62_with_clickhouses_message_and_400(
    clickhouse: FlywheelSettings,
) -> None:
    response = post(clickhouse, "SELEC 1")
    assert response.status_code == 400
    assert response.headers["X-ClickHouse-Exception-Code"] == "62"
    assert response.text.startswith("Code: 62. DB::Exception: Syntax error")
    assert "(SYNTAX_ERROR)" in response.text


def test_an_unknown_table_answers_code_60_and_404(clickhouse: FlywheelSettings) -> None:
    response = post(clickhouse, "SELECT * FROM no_such_table_anywhere")
    assert response.status_code == 404
    assert response.headers["X-ClickHouse-Exception-Code"] == "60"


def test_a_wrong_password_answers_code_516_and_403(clickhouse: FlywheelSettings) -> None:
    response = post(clickhouse, "SELECT 1", auth=("analyst", "nope"))
    assert response.status_code == 403
    assert response.headers["X-ClickHouse-Exception-Code"] == "516"
    analyst = analyst_auth(clickhouse)
    ok = post(clickhouse, "SELECT 1", auth=None,
              headers={"X-ClickHouse-User": "analyst",
                       "X-ClickHouse-Key": stored_password(clickhouse.state_path, "analyst")})
    assert analyst is not None
    assert ok.text == "1\n"


def test_a_get_request_is_readonly_like_clickhouse(
    clickhouse: FlywheelSettings, unique_name: str
) -> None:
    response = httpx.get(clickhouse.clickhouse.http_url, auth=admin_auth(clickhouse),
                         params={"query": f"CREATE TABLE {unique_name} (a UInt8) ENGINE = Memory"})
    assert response.headers["X-ClickHouse-Exception-Code"] == "164"


def test_ping_answers_while_a_long_query_runs(clickhouse: FlywheelSettings) -> None:
    long_query = threading.Thread(target=post, args=(clickhouse, "SELECT sleep(3)"))
    long_query.start()
    try:
        time.sleep(0.5)
        assert long_query.is_alive()
        ping = httpx.get(f"{clickhouse.clickhouse.http_url}/ping", timeout=2)
        small = post(clickhouse, "SELECT 42")
        assert ping.text == "Ok.\n" and small.text == "42\n"
        assert long_query.is_alive(), "ping and a small query came back before the long one"
    finally:
        long_query.join()


def test_metrics_count_requests_errors_and_bytes(clickhouse: FlywheelSettings) -> None:
    post(clickhouse, "SELECT 1")
    post(clickhouse, "SELEC 1")
    text = httpx.get(f"{clickhouse.clickhouse.http_url}/metrics").text
    assert 'flywheel_clickhouse_http_requests_total{endpoint="/",status="200"}' in text
    assert 'flywheel_clickhouse_http_errors_total{code="62"}' in text
    assert "flywheel_clickhouse_http_sent_bytes_total" in text
    assert "flywheel_clickhouse_http_request_duration_seconds_bucket" in text
