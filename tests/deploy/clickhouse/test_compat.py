"""Where the front behaves as ClickHouse's HTTP interface is documented to, for real clients."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, StreamFailureError

from deploy.clickhouse.client import get_client
from deploy.clickhouse.passwords import stored_password
from deploy.settings import FlywheelSettings
from tests.deploy.clickhouse.conftest import admin_auth

pytestmark = pytest.mark.integration


def post(settings: FlywheelSettings, sql: str, **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("auth", admin_auth(settings))
    return httpx.post(settings.clickhouse.http_url, content=sql, timeout=30, **kwargs)


def post_bytes(settings: FlywheelSettings, body: bytes, **kwargs: Any) -> httpx.Response:
    return httpx.post(settings.clickhouse.http_url, content=body, timeout=30,
                      auth=admin_auth(settings), **kwargs)


def test_a_query_sent_as_a_multipart_form_field_runs(clickhouse: FlywheelSettings) -> None:
    response = httpx.post(clickhouse.clickhouse.http_url, auth=admin_auth(clickhouse),
                          files={"query": (None, "SELECT 40 + 2")})
    assert response.status_code == 200, response.text
    assert response.text == "42\n"


def test_an_external_data_table_is_joined_like_the_docs_curl_example(
    clickhouse: FlywheelSettings, unique_name: str
) -> None:
    post(clickhouse, f"CREATE TABLE {unique_name} (id UInt32, name String) "
         "ENGINE = MergeTree ORDER BY id")
    httpx.post(clickhouse.clickhouse.http_url, auth=admin_auth(clickhouse),
               params={"query": f"INSERT INTO {unique_name} FORMAT TSV"},
               content=b"1\tone\n2\ttwo\n3\tthree\n")
    analyst = httpx.BasicAuth("analyst", stored_password(clickhouse.state_path, "analyst"))
    response = httpx.post(
        clickhouse.clickhouse.http_url, auth=analyst,
        params={"query": f"SELECT name FROM {unique_name} WHERE id IN wanted ORDER BY id",
                "wanted_structure": "id UInt32", "wanted_format": "TSV"},
        files={"wanted": ("wanted.tsv", b"1\n3\n")})
    assert response.status_code == 200, response.text
    assert response.text == "one\nthree\n"


def test_an_error_in_the_middle_of_a_stream_raises_a_stream_error_in_the_client(
    clickhouse: FlywheelSettings,
) -> None:
    sql = "SELECT number, throwIf(number = 3000000, 'late failure') FROM numbers(4000000)"
    raw = post(clickhouse, sql)
    assert raw.status_code == 200  # the headers went out before the failure
    tag = raw.headers["X-ClickHouse-Exception-Tag"]
    assert f"__exception__\r\n{tag}\r\n".encode() in raw.content
    assert b"late failure" in raw.content[-2000:]
    with get_client(clickhouse) as client, pytest.raises((StreamFailureError, DatabaseError)) \
            as info:
        with client.query_row_block_stream(sql) as stream:
            for _ in stream:
                pass
    assert "late failure" in str(info.value)


def test_only_results_carry_x_clickhouse_format(
    clickhouse: FlywheelSettings, unique_name: str
) -> None:
    ddl = post(clickhouse, f"CREATE TABLE {unique_name} (a UInt8) ENGINE = Memory")
    insert = post(clickhouse, f"INSERT INTO {unique_name} VALUES (1), (2), (3)")
    select = post(clickhouse, f"SELECT a FROM {unique_name} ORDER BY a")
    assert "X-ClickHouse-Format" not in ddl.headers
    assert "X-ClickHouse-Format" not in insert.headers
    assert json.loads(insert.headers["X-ClickHouse-Summary"])["written_rows"] == "3"
    assert select.headers["X-ClickHouse-Format"] == "TabSeparated"
    assert json.loads(select.headers["X-ClickHouse-Summary"])["result_rows"] == "3"


def test_the_database_parameter_applies_to_one_query_of_a_session(
    clickhouse: FlywheelSettings,
) -> None:
    session = {"session_id": "db-param-session"}
    first = post(clickhouse, "SELECT currentDatabase()", params={**session, "database": "system"})
    second = post(clickhouse, "SELECT currentDatabase()", params=session)
    by_header = post(clickhouse, "SELECT currentDatabase()",
                     headers={"X-ClickHouse-Database": "system"})
    plain = post(clickhouse, "SELECT currentDatabase()")
    assert first.text == "system\n"
    assert second.text == f"{clickhouse.clickhouse.database}\n"
    assert by_header.text == "system\n"
    assert plain.text == f"{clickhouse.clickhouse.database}\n"


def test_the_format_header_sets_the_default_format(clickhouse: FlywheelSettings) -> None:
    response = post(clickhouse, "SELECT 1 AS x", headers={"X-ClickHouse-Format": "JSONEachRow"})
    assert response.headers["X-ClickHouse-Format"] == "JSONEachRow"
    assert json.loads(response.text) == {"x": 1}


def test_several_statements_in_one_body_are_refused_with_code_62(
    clickhouse: FlywheelSettings, unique_name: str
) -> None:
    response = post(clickhouse, f"SELECT 1; CREATE TABLE {unique_name} (a UInt8) ENGINE = Memory")
    assert response.status_code == 400
    assert response.headers["X-ClickHouse-Exception-Code"] == "62"
    assert post(clickhouse, f"EXISTS TABLE {unique_name}").text == "0\n"
    assert post(clickhouse, "SELECT 1;").text == "1\n"  # one statement and its ';' is fine


def test_head_ping_answers_without_a_body(clickhouse: FlywheelSettings) -> None:
    response = httpx.head(f"{clickhouse.clickhouse.http_url}/ping")
    assert response.status_code == 200 and response.content == b""


def test_progress_headers_are_sent_when_asked(clickhouse: FlywheelSettings) -> None:
    response = post(clickhouse, "SELECT count() FROM numbers(1000000)",
                    params={"send_progress_in_http_headers": "1"})
    progress = [json.loads(v) for k, v in response.headers.multi_items()
                if k.lower() == "x-clickhouse-progress"]
    assert progress and int(progress[-1]["read_rows"]) == 1_000_000
    assert response.text == "1000000\n"


def test_system_processes_names_the_account_that_runs_a_query(
    clickhouse: FlywheelSettings,
) -> None:
    response = post(clickhouse, "SELECT query FROM system.processes WHERE query LIKE "
                    "'%find-me-in-processes%' AND is_initial_query",
                    params={"query_id": "find-me-in-processes"})
    assert "user=default" in response.text


def test_compress_1_answers_in_clickhouses_block_format_the_engine_itself_writes(
    clickhouse: FlywheelSettings, tmp_path: Any
) -> None:
    import glob

    import chdb

    from deploy.clickhouse.native_compression import iter_decompressed

    # A MergeTree column file holds the same checksummed LZ4 blocks: read one back first.
    engine = chdb.connect(str(tmp_path / "own"))
    engine.query("CREATE TABLE t (a UInt64 CODEC(LZ4)) ENGINE = MergeTree ORDER BY tuple() "
                 "SETTINGS min_bytes_for_wide_part = 0")
    engine.query("INSERT INTO t SELECT number FROM numbers(1000)")
    column = next(iter(glob.glob(str(tmp_path / "own" / "store" / "**" / "a.bin"),
                                 recursive=True)))
    engine.close()
    decoded = b"".join(iter_decompressed(open(column, "rb").read(), max_size_bytes=1 << 20))
    assert decoded == b"".join(i.to_bytes(8, "little") for i in range(1000))

    response = post(clickhouse, "SELECT number FROM numbers(100000)", params={"compress": "1"})
    text = b"".join(iter_decompressed(response.content, max_size_bytes=1 << 30))
    assert text.decode().splitlines()[-1] == "99999"
    # And the other way: a compressed request body.
    from deploy.clickhouse.native_compression import compress_blocks

    body = compress_blocks(b"SELECT 6 * 7")
    assert post_bytes(clickhouse, body, params={"decompress": "1"}).text == "42\n"
    broken = bytearray(body)
    broken[-1] ^= 0xFF
    refused = post_bytes(clickhouse, bytes(broken), params={"decompress": "1"})
    assert refused.status_code == 400 and refused.headers["X-ClickHouse-Exception-Code"] == "40"
