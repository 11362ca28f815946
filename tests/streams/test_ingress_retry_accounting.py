"""The demo's accounting counts events by id: a retry after the ingest's 503 is no loss.

The rows are written straight into a migrated database of the real ClickHouse, as the
worker writes them: a retried event at two offsets, both ledgered `curated`, one row of
it kept under FINAL.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from deploy.demo.accounting import account
from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings
from streams.topics import CHAT_EVENTS
from tests.conftest import migrated_database, with_database

pytestmark = pytest.mark.integration

TOPIC = CHAT_EVENTS.name
SINCE = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def client(
    running: Callable[..., Supervisor], settings: FlywheelSettings, unique_name: str
) -> Iterator[Any]:
    running("clickhouse")
    with migrated_database(with_database(settings, unique_name)) as client:
        yield client


def _ledger(client: Any, offset: int, event_id: uuid.UUID | None, outcome: str) -> None:
    client.insert("stream_ledger", [(TOPIC, 0, offset, event_id, outcome, "")],
                  column_names=["source_topic", "source_partition", "source_offset",
                                "event_id", "outcome", "reason"])


def _turn(client: Any, offset: int, event_id: uuid.UUID) -> None:
    client.insert("chat_turns", [(event_id, "c-1", 0, "user", "hi", datetime.now(UTC), "acme",
                                  TOPIC, 0, offset)],
                  column_names=["event_id", "conversation_id", "turn_index", "role", "text",
                                "ts", "tenant", "source_topic", "source_partition",
                                "source_offset"])


def _quarantined(client: Any, offset: int, event_id: uuid.UUID | None) -> None:
    client.insert("quarantine", [(uuid.uuid4(), event_id, TOPIC, 0, offset, ["toxic"],
                                  "toxic", datetime.now(UTC))],
                  column_names=["record_id", "event_id", "source_topic", "source_partition",
                                "source_offset", "reasons", "primary_reason",
                                "quarantined_at"])


def test_a_retried_event_at_two_offsets_is_one_event_and_nothing_is_missing(client: Any) -> None:
    retried, toxic = uuid.uuid4(), uuid.uuid4()
    for offset in (0, 1):  # the 503'd send landed late, and the retry landed too
        _ledger(client, offset, retried, "curated")
        _turn(client, offset, retried)
    _ledger(client, 2, toxic, "quarantined")
    _quarantined(client, 2, toxic)
    _ledger(client, 3, None, "quarantined")  # unparseable: keyed by its offset
    _quarantined(client, 3, None)

    result = account(client, start={(TOPIC, 0): 0}, end={(TOPIC, 0): 4}, since=SINCE)

    assert (result.records, result.events, result.retried) == (4, 3, 1)
    assert (result.curated, result.quarantined, result.errors) == (1, 2, 0)
    assert result.missing == 0 and result.in_two_places == 0 and result.balanced


def test_an_offset_the_worker_has_not_processed_yet_is_missing(client: Any) -> None:
    event = uuid.uuid4()
    _ledger(client, 0, event, "curated")
    _turn(client, 0, event)

    result = account(client, start={(TOPIC, 0): 0}, end={(TOPIC, 0): 2}, since=SINCE)

    assert result.events == 2 and result.missing == 1 and not result.balanced


def test_an_event_in_two_places_is_not_balanced(client: Any) -> None:
    event = uuid.uuid4()
    _ledger(client, 0, event, "curated")
    _turn(client, 0, event)
    _ledger(client, 1, event, "quarantined")
    _quarantined(client, 1, event)

    result = account(client, start={(TOPIC, 0): 0}, end={(TOPIC, 0): 2}, since=SINCE)

    assert result.in_two_places == 1 and not result.balanced
