"""A demo that runs out of time says what the trainer decided last, read from ClickHouse."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from deploy.demo.plan import make_plan
from deploy.demo.run import DemoRunner, DemoTimeoutError
from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings
from tests.conftest import migrated_database, with_database

pytestmark = pytest.mark.integration


def _timeout_message(runner: DemoRunner) -> str:
    runner._deadline = time.monotonic() + 0.3
    try:
        with pytest.raises(DemoTimeoutError) as raised:
            runner._wait("version 3 serving", lambda: False, poll_s=0.05)
    finally:
        if runner._reader is not None:
            runner._reader.close()
            runner._reader = None
    return str(raised.value)


def test_a_timeout_waiting_for_a_version_names_the_last_rejection(
    running: Callable[..., Supervisor], settings: FlywheelSettings, unique_name: str,
) -> None:
    running("clickhouse")
    runner = DemoRunner(settings, make_plan(settings, quick=True, time_budget_s=60))
    runner.settings = with_database(runner.settings, unique_name)
    with migrated_database(runner.settings) as client:
        assert "the trainer has evaluated nothing yet" in _timeout_message(runner)

        at = datetime(2026, 11, 27, 0, 26, 51, tzinfo=UTC)
        reason = "forgets: regression perplexity 283.16 vs 256.93 served (allowed <= 269.78)"
        client.insert("evaluations", [
            [uuid.uuid4(), runner.settings.model.name, 3, at - timedelta(seconds=60),
             at - timedelta(seconds=30), False, reason, at],
            [uuid.uuid4(), "another-model", 9, at, at, True, "better", at + timedelta(1)],
        ], column_names=["evaluation_id", "model", "candidate_version", "window_start",
                         "window_end", "passed", "reason", "evaluated_at"])

        message = _timeout_message(runner)
        assert (f"waited 0 s for version 3 serving; the last evaluation (at 00:26:51 UTC): "
                f"not published: {reason}") in message
        assert "demo.time_budget_s=60" in message
