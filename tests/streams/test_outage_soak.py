"""Issue 17's aim, in full: 3 `kill -9`s of the worker, a 60 s broker outage and a 60 s
ClickHouse outage, with the worker never restarted by hand: 0 records lost or duplicated.

Slow (about 5 minutes) and run on purpose:
`.venv/bin/python -m pytest tests/streams/test_outage_soak.py -m slow -o log_cli=true
--log-cli-level=INFO --stack-port-offset 23000`. It logs the seconds from each outage's
end to the first record landed after it (the figures quoted in the issue's note); it
asserts only conservation and that only the kills restarted the worker.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings
from tests.deploy.local.polling import wait_for
from tests.streams.test_outage_restart import TOPICS, _each_once, apps  # noqa: F401
from tests.streams.test_outage_worker import frozen_broker
from tests.streams.worker_harness import Produced, landed, produce_conversations

pytestmark = [pytest.mark.integration, pytest.mark.slow]

logger = logging.getLogger(__name__)

OUTAGE_S = 60.0
KILLS = 3


def _merge(parts: list[Produced]) -> Produced:
    merged = Produced()
    for part in parts:
        merged.chat_ids += part.chat_ids
        merged.feedback_ids += part.feedback_ids
    return merged


def _seconds_until_landed(client: Any, settings: FlywheelSettings, part: Produced,
                          started: float) -> float:
    """Seconds from `started` until the first event of `part` is in a table."""
    wanted = set(part.chat_ids)
    assert wait_for(lambda: bool(wanted & set(landed(client, settings, TOPICS)["curated"])),
                    timeout_s=300, interval_s=0.5)
    return time.monotonic() - started


def test_three_kills_a_minute_without_the_broker_and_one_without_clickhouse_lose_nothing(
    apps: tuple[Supervisor, FlywheelSettings, Any],  # noqa: F811
    running: Callable[..., Supervisor],
) -> None:
    supervisor, settings, client = apps
    stack = running("kafka", "clickhouse")
    supervisor.up(["streams-worker"])
    service = supervisor.get("streams-worker")
    parts: list[Produced] = []
    figures: dict[str, float] = {}

    def keeper_restarts() -> int:
        state = supervisor.keeper_of(service)
        return state.restarts if state is not None else 0

    def curated() -> int:
        return len(landed(client, settings, TOPICS)["curated"])

    for kill in range(KILLS):
        parts.append(produce_conversations(settings, TOPICS, conversations=400,
                                           seed=100 + kill))
        assert wait_for(lambda: supervisor.status_of(service).healthy, timeout_s=120)
        # Killed mid-stream: once it made progress, with most of the records still to come.
        before = curated()
        assert wait_for(lambda b=before: curated() >= b + 100, timeout_s=120)
        state = supervisor.keeper_of(service)
        assert state is not None and state.child_pid is not None
        os.kill(state.child_pid, signal.SIGKILL)
        killed = time.monotonic()
        assert wait_for(lambda k=kill: keeper_restarts() == k + 1, timeout_s=60)
        assert wait_for(lambda: supervisor.status_of(service).healthy, timeout_s=120)
        figures[f"kill {kill + 1}: healthy again after s"] = time.monotonic() - killed

    produced_later: list[Produced] = []
    frozen_broker(stack, OUTAGE_S, lambda: None)
    thawed = time.monotonic()
    produced_later.append(produce_conversations(settings, TOPICS, conversations=300, seed=200))
    figures["broker outage: first new record landed after s"] = _seconds_until_landed(
        client, settings, produced_later[-1], thawed)

    stack.down(["clickhouse"])
    try:
        produced_later.append(produce_conversations(settings, TOPICS, conversations=300,
                                                    seed=300))
        time.sleep(OUTAGE_S)  # the outage itself
    finally:
        stack.up(["clickhouse"])
    back = time.monotonic()
    figures["ClickHouse outage: first record landed after s"] = _seconds_until_landed(
        client, settings, produced_later[-1], back)

    produced = _merge(parts + produced_later)
    assert wait_for(lambda: _each_once(produced, landed(client, settings, TOPICS))[0] == 0,
                    timeout_s=300, interval_s=1.0)
    lost, duplicated = _each_once(produced, landed(client, settings, TOPICS))
    figures.update({"events": len(produced.chat_ids) + len(produced.feedback_ids),
                    "lost": lost, "duplicated": duplicated,
                    "restarts": keeper_restarts()})
    for name, value in figures.items():
        logger.info("soak figure: %s = %.1f", name, value)
    assert (lost, duplicated) == (0, 0)
    assert keeper_restarts() == KILLS, "the worker died during an outage; see its log"
