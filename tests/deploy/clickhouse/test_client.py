"""clickhouse-connect over HTTP against the embedded server, as Flywheel's code uses it."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from decimal import Decimal  # noqa: F401  (kept for readers adding Decimal columns)
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from deploy.clickhouse.client import get_client
from deploy.clickhouse.passwords import stored_password
from deploy.settings import FlywheelSettings

pytestmark = pytest.mark.integration

COLUMNS = ["id", "uid", "ts", "topic", "tags", "attrs", "score", "text"]
SCHEMA = """(
    id UInt64, uid UUID, ts DateTime64(6, 'UTC'), topic LowCardinality(String),
    tags Array(String), attrs Map(String, Float64), score Nullable(Float32), text String
) ENGINE = MergeTree ORDER BY id"""
TEXTS = [
    "hello", "héllo wörld", "日本語のテキスト", "emoji 🚀🔥", "", "tab\tand\nnewline", "'quote\"",
]


def make_rows(n: int, *, start: int = 0) -> list[list[Any]]:
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return [
        [
            i,
            uuid.UUID(int=(i * 2654435761) % (1 << 128) + 1),
            base + dt.timedelta(microseconds=i * 1_234_567),
            f"topic-{i % 7}",
            [f"t{j}" for j in range(i % 4)],
            {f"k{j}": j * 0.5 for j in range(i % 3)},
            None if i % 5 == 0 else float(i % 1000) / 4,
            TEXTS[i % len(TEXTS)] + str(i),
        ]
        for i in range(start, start + n)
    ]


def test_ddl_creates_describes_and_drops_a_table(client: Any, unique_name: str) -> None:
    client.command(f"CREATE TABLE {unique_name} {SCHEMA}")
    described = client.query(f"DESCRIBE TABLE {unique_name}").result_rows
    assert [row[0] for row in described] == COLUMNS
    assert client.command(f"EXISTS TABLE {unique_name}") == 1
    client.command(f"DROP TABLE {unique_name}")
    assert client.command(f"EXISTS TABLE {unique_name}") == 0


@pytest.mark.parametrize("compress", ["lz4", "zstd", False])
def test_a_100k_row_native_insert_reads_back_value_for_value(
    clickhouse: FlywheelSettings, unique_name: str, compress: Any
) -> None:
    rows = make_rows(100_000)
    with get_client(clickhouse, compress=compress) as client:
        client.command(f"CREATE TABLE {unique_name} {SCHEMA}")
        summary = client.insert(unique_name, rows, column_names=COLUMNS)
        assert summary.written_rows == 100_000
        query = f"SELECT {', '.join(COLUMNS)} FROM {unique_name} ORDER BY id"
        back = client.query(query).result_rows
    assert len(back) == len(rows)
    for got, want in zip(back, rows, strict=True):
        got = list(got)
        if got[2].tzinfo is None:  # clickhouse-connect returns naive UTC for a UTC server
            got[2] = got[2].replace(tzinfo=dt.UTC)
        if got[6] is not None:
            got[6] = pytest.approx(want[6])
        assert got == want


def test_query_df_and_query_arrow_return_the_inserted_rows(client: Any, unique_name: str) -> None:
    client.command(f"CREATE TABLE {unique_name} {SCHEMA}")
    client.insert(unique_name, make_rows(1000), column_names=COLUMNS)
    df = client.query_df(f"SELECT id, topic, text FROM {unique_name} ORDER BY id")
    assert len(df) == 1000 and list(df.columns) == ["id", "topic", "text"]
    assert df["text"].iloc[2] == TEXTS[2] + "2"
    table = client.query_arrow(f"SELECT id, score FROM {unique_name} ORDER BY id")
    assert table.num_rows == 1000
    assert table.column("score").null_count == 200


def test_server_side_parameters_are_bound_by_the_server(client: Any) -> None:
    result = client.query(
        "SELECT {n:UInt32} * 2, {s:String}, {d:Date}",
        parameters={"n": 21, "s": "o'k 🚀", "d": dt.date(2026, 11, 26)},
    )
    assert result.result_rows == [(42, "o'k 🚀", dt.date(2026, 11, 26))]


def test_a_wrong_password_is_rejected_with_code_516(clickhouse: FlywheelSettings) -> None:
    with pytest.raises(DatabaseError) as info:
        get_client(clickhouse, username="analyst", password="wrong")
    assert "516" in str(info.value)


def test_a_readonly_account_reads_but_cannot_write(
    clickhouse: FlywheelSettings, client: Any, unique_name: str
) -> None:
    client.command(f"CREATE TABLE {unique_name} (a UInt8) ENGINE = MergeTree ORDER BY a")
    with get_client(clickhouse, username="analyst",
                    password=stored_password(clickhouse.state_path, "analyst")) as analyst:
        assert analyst.command(f"SELECT count() FROM {unique_name}") == 0
        with pytest.raises(DatabaseError) as info:
            analyst.command(f"INSERT INTO {unique_name} VALUES (1)")
    assert "164" in str(info.value)


def test_the_readonly_client_option_refuses_writes(
    clickhouse: FlywheelSettings, client: Any, unique_name: str
) -> None:
    client.command(f"CREATE TABLE {unique_name} (a UInt8) ENGINE = MergeTree ORDER BY a")
    with get_client(clickhouse, readonly=True) as reader:
        assert reader.command(f"SELECT count() FROM {unique_name}") == 0
        with pytest.raises(DatabaseError, match="164"):
            reader.command(f"INSERT INTO {unique_name} VALUES (1)")


def test_replacing_merge_tree_with_final_shows_no_duplicates_after_a_reinserted_batch(
    client: Any, unique_name: str
) -> None:
    client.command(
        f"CREATE TABLE {unique_name} (id UInt64, v UInt32, version UInt32) "
        "ENGINE = ReplacingMergeTree(version) ORDER BY id"
    )
    batch = [[i, i * 10, 1] for i in range(5000)]
    client.insert(unique_name, batch, column_names=["id", "v", "version"])
    client.insert(unique_name, batch, column_names=["id", "v", "version"])
    assert client.command(f"SELECT count() FROM {unique_name}") == 10_000
    assert client.command(f"SELECT count() FROM {unique_name} FINAL") == 5000
    assert client.command(f"SELECT sum(v) FROM {unique_name} FINAL") == sum(r[1] for r in batch)


def test_session_settings_and_temporary_tables_live_in_the_session(
    clickhouse: FlywheelSettings,
) -> None:
    with get_client(clickhouse, session_id=f"s-{uuid.uuid4()}") as client:
        client.command("CREATE TEMPORARY TABLE tmp (a UInt8)")
        client.command("INSERT INTO tmp VALUES (1), (2)")
        client.command("SET max_threads = 1")
        assert client.command("SELECT count() FROM tmp") == 2
        assert client.command("SELECT getSetting('max_threads')") == 1
    with get_client(clickhouse) as other:
        assert other.command("SELECT getSetting('max_threads')") != 1


def test_four_concurrent_clients_insert_and_query_without_losing_rows(
    clickhouse: FlywheelSettings, client: Any, unique_name: str
) -> None:
    client.command(f"CREATE TABLE {unique_name} {SCHEMA}")
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            with get_client(clickhouse) as c:
                for batch in range(5):
                    start = (worker * 5 + batch) * 2000
                    c.insert(unique_name, make_rows(2000, start=start), column_names=COLUMNS)
                    assert c.command(f"SELECT count() FROM {unique_name}") >= 2000
        except BaseException as e:  # reported to the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert client.command(f"SELECT count(), uniqExact(id) FROM {unique_name}") == ["40000", "40000"]


def test_a_readonly_client_sends_settings_on_every_query_of_its_session(
    clickhouse: FlywheelSettings, client: Any, unique_name: str
) -> None:
    client.command(f"CREATE TABLE {unique_name} (a UInt8) ENGINE = MergeTree ORDER BY a")
    client.insert(unique_name, [[1], [2]], column_names=["a"])
    with get_client(clickhouse, readonly=True) as reader:
        for block_rows in (1, 2, 3):  # a new setting each time, in one session
            with reader.query_row_block_stream(f"SELECT a FROM {unique_name}",
                                               settings={"max_block_size": block_rows}) as s:
                assert sum(len(b) for b in s) == 2
        with pytest.raises(DatabaseError, match="164"):
            reader.command(f"INSERT INTO {unique_name} VALUES (3)")
        assert reader.command("(SELECT 5)") == 5
