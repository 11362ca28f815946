"""Unit tests of the server's pure parts: statement splitting, codecs, errors, settings hand-off."""

from __future__ import annotations

import lz4.frame
import pytest
import zstandard
from pydantic import SecretStr

from deploy.clickhouse.codecs import decode_body
from deploy.clickhouse.config import settings_from_json, settings_to_json
from deploy.clickhouse.errors import ServerError, http_status_for
from deploy.clickhouse.statements import split
from deploy.settings import FlywheelSettings


@pytest.mark.parametrize(
    ("text", "sql", "fmt", "data"),
    [
        (b"INSERT INTO t (a, b) FORMAT Native\n\x00\x01'", b"INSERT INTO t (a, b)", "Native",
         b"\x00\x01'"),
        (b"insert into `x format` format CSV\r\n1,2\n", b"insert into `x format`", "CSV",
         b"1,2\n"),
        (b"INSERT INTO t SETTINGS async_insert=0 FORMAT TSV\n1\n",
         b"INSERT INTO t SETTINGS async_insert=0", "TSV", b"1\n"),
        # VALUES data goes to the Values input format, never to the SQL parser.
        (b"INSERT INTO t VALUES ('FORMAT x')", b"INSERT INTO t", "Values", b" ('FORMAT x')"),
        (b"INSERT INTO t (values) VALUES (1); SELECT 2", b"INSERT INTO t (values)", "Values",
         b" (1); SELECT 2"),
        (b"-- c\nINSERT INTO t SELECT 1 FORMAT TSV", b"-- c\nINSERT INTO t SELECT 1 FORMAT TSV",
         None, b""),
    ],
)
def test_split_separates_an_insert_statement_from_its_data(
    text: bytes, sql: bytes, fmt: str | None, data: bytes
) -> None:
    statement = split(text)
    assert (statement.sql, statement.insert_format, statement.data) == (sql, fmt, data)


def test_a_trailing_format_clause_wins_over_default_format() -> None:
    assert split(b"SELECT 1 FORMAT JSONEachRow;").output_format("TSV") == "JSONEachRow"
    assert split(b"SELECT 'FORMAT x'").output_format("TabSeparated") == "TabSeparated"


def test_concatenated_lz4_and_zstd_frames_decode_whole() -> None:
    blocks = [b"a" * 1000, b"b" * 10, b"c" * 5000]
    lz4_body = b"".join(lz4.frame.compress(b) for b in blocks)
    zstd_body = b"".join(zstandard.ZstdCompressor().compress(b) for b in blocks)
    assert decode_body(lz4_body, "lz4", max_size_bytes=1 << 20) == b"".join(blocks)
    assert decode_body(zstd_body, "zstd", max_size_bytes=1 << 20) == b"".join(blocks)


def test_a_decompressed_body_over_the_limit_is_refused() -> None:
    with pytest.raises(ServerError) as info:
        decode_body(lz4.frame.compress(b"z" * 100_000), "lz4", max_size_bytes=10_000)
    assert info.value.http_status == 413


def test_engine_errors_keep_clickhouses_code_name_and_http_status() -> None:
    error = ServerError.from_engine(RuntimeError(
        "Streaming insert failed: Code: 60. DB::Exception: Table x does not exist. (UNKNOWN_TABLE)"
    ))
    assert (error.code, error.name, error.http_status) == (60, "UNKNOWN_TABLE", 404)
    assert error.body(version="26.9").startswith("Code: 60. DB::Exception: Table x")
    assert [http_status_for(c) for c in (62, 516, 194, 229, 241)] == [400, 403, 401, 413, 500]


def test_settings_survive_the_hand_off_to_the_server_process(tmp_path: object) -> None:
    base = FlywheelSettings(state_dir=tmp_path)  # type: ignore[arg-type]
    users = [base.clickhouse.users[0], base.clickhouse.users[1].model_copy(
        update={"password": SecretStr("s3cret")})]
    settings = base.model_copy(update={"clickhouse": base.clickhouse.model_copy(
        update={"users": users})})
    rebuilt = settings_from_json(settings_to_json(settings))
    assert rebuilt.clickhouse == settings.clickhouse
    assert rebuilt.clickhouse.users[1].password.get_secret_value() == "s3cret"
    assert rebuilt.state_path == settings.state_path
