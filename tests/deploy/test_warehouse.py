"""Warehouse migrations and views against the real ClickHouse of the test stack."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings
from deploy.warehouse import MigrationError, load_migrations, migrate, split_statements


def test_split_statements_drops_comments_and_keeps_semicolons_inside_lines() -> None:
    sql = "-- a comment; still a comment\nSELECT 'a;b';\n\nSELECT 2;\n"
    assert split_statements(sql) == ["SELECT 'a;b'", "SELECT 2"]


def test_migrations_render_retention_from_settings() -> None:
    settings = FlywheelSettings.model_validate({"warehouse": {"quarantine_ttl_days": 7}})
    core = load_migrations(settings)[0]
    quarantine = next(s for s in core.statements if ".quarantine" in s.splitlines()[0])
    assert "INTERVAL 7 DAY" in quarantine


def test_a_database_name_that_is_not_an_identifier_is_refused() -> None:
    settings = FlywheelSettings.model_validate({"clickhouse": {"database": "x; DROP"}})
    with pytest.raises(MigrationError, match="FLYWHEEL_CLICKHOUSE__DATABASE"):
        load_migrations(settings)


@pytest.fixture
def warehouse(
    running: Callable[..., Supervisor], settings: FlywheelSettings, unique_name: str
) -> Iterator[tuple[Any, FlywheelSettings]]:
    from deploy.clickhouse.client import get_client

    running("clickhouse")
    isolated = settings.model_copy(
        update={"clickhouse": settings.clickhouse.model_copy(update={"database": unique_name})}
    )
    client = get_client(isolated, database="default")
    try:
        yield client, isolated
    finally:
        client.command(f"DROP DATABASE IF EXISTS {unique_name}")
        client.close()


@pytest.mark.integration
def test_running_migrations_twice_changes_nothing_the_second_time(
    warehouse: tuple[Any, FlywheelSettings],
) -> None:
    client, settings = warehouse
    db = settings.clickhouse.database
    first = migrate(client, settings)
    tables_after_first = client.query(
        f"SELECT name, create_table_query FROM system.tables WHERE database = '{db}' ORDER BY name"
    ).result_rows
    second = migrate(client, settings)
    tables_after_second = client.query(
        f"SELECT name, create_table_query FROM system.tables WHERE database = '{db}' ORDER BY name"
    ).result_rows
    shipped = [m.version for m in load_migrations(settings)]
    assert [m.version for m in first.applied] == shipped
    assert second.applied == [] and len(second.already_applied) == len(shipped)
    assert tables_after_first == tables_after_second
    recorded = client.query(f"SELECT count() FROM {db}.schema_migrations").result_rows[0][0]
    assert recorded == len(shipped)


@pytest.mark.integration
def test_an_edited_migration_is_refused(warehouse: tuple[Any, FlywheelSettings]) -> None:
    client, settings = warehouse
    db = settings.clickhouse.database
    migrate(client, settings)
    client.command(f"ALTER TABLE {db}.schema_migrations UPDATE checksum = 'x' WHERE version = 1"
                   " SETTINGS mutations_sync = 1")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(client, settings)


def _turn(event_id: uuid.UUID, *, role: str, version: str, ts: datetime, latency: float | None,
          offset: int) -> list[Any]:
    return [event_id, "conv-1", offset, role, "text", "flywheel-chat" if version else "",
            version, latency, ts, "acme", "flywheel.chat.events", 0, offset]


@pytest.mark.integration
def test_views_count_a_replayed_batch_once(warehouse: tuple[Any, FlywheelSettings]) -> None:
    client, settings = warehouse
    db = settings.clickhouse.database
    migrate(client, settings)
    hour = datetime(2026, 11, 26, 10, tzinfo=UTC)
    answer_ids = [uuid.uuid4() for _ in range(4)]
    rows = [
        _turn(answer_ids[i], role="assistant", version="v1" if i < 2 else "v2",
              ts=hour + timedelta(minutes=i), latency=100.0 * (i + 1), offset=i)
        for i in range(4)
    ]
    columns = ["event_id", "conversation_id", "turn_index", "role", "text", "model",
               "model_version", "latency_ms", "ts", "tenant", "source_topic",
               "source_partition", "source_offset"]
    client.insert(f"{db}.chat_turns", rows, column_names=columns)
    client.insert(f"{db}.chat_turns", rows, column_names=columns)  # the replay
    feedback_columns = ["event_id", "conversation_id", "turn_event_id", "kind", "negative",
                        "model_version", "tenant", "ts", "source_topic", "source_partition",
                        "source_offset"]
    feedback = [
        [uuid.uuid4(), "conv-1", answer_ids[0], "thumbs_down", True, "v1", "acme", hour, "f", 0, 0],
        [uuid.uuid4(), "conv-1", answer_ids[1], "thumbs_up", False, "v1", "acme", hour, "f", 0, 1],
        [uuid.uuid4(), "conv-1", answer_ids[2], "thumbs_up", False, "v2", "acme", hour, "f", 0, 2],
    ]
    client.insert(f"{db}.feedback", feedback, column_names=feedback_columns)
    client.insert(f"{db}.feedback", feedback, column_names=feedback_columns)

    volume = client.query(f"SELECT turns FROM {db}.volume_hourly").result_rows
    assert volume == [(4,)]
    rates = {
        row[0]: row[1:]
        for row in client.query(
            f"SELECT model_version, answers, feedback, negative_feedback, negative_rate "
            f"FROM {db}.feedback_by_model_version ORDER BY model_version"
        ).result_rows
    }
    assert rates["v1"] == (2, 2, 1, 0.5)
    assert rates["v2"] == (2, 1, 0, 0.0)
    latency = client.query(
        f"SELECT model_version, answers, p50_ms FROM {db}.latency_by_model_version "
        "ORDER BY model_version"
    ).result_rows
    assert [(r[0], r[1]) for r in latency] == [("v1", 2), ("v2", 2)]
    assert latency[0][2] in (100.0, 200.0)
