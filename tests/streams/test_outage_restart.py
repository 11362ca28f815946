"""The stream worker as `flywheel apps up` runs it: healthy only once assigned, and started
again by its keeper after `kill -9`, with nobody running a command, losing nothing.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from confluent_kafka.admin import AdminClient

from deploy.local.stack import build_apps_supervisor
from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings
from streams.topics import CHAT_EVENTS, ERRORS, FEEDBACK_EVENTS, QUARANTINE, ensure_topics
from streams.worker import READY_METRIC
from tests.conftest import migrated_database, with_database
from tests.deploy.local.polling import wait_for
from tests.streams.worker_harness import (
    Produced,
    Topics,
    fast_worker_settings,
    landed,
    produce_conversations,
)

pytestmark = pytest.mark.integration

TOPICS = Topics(CHAT_EVENTS.name, FEEDBACK_EVENTS.name, QUARANTINE.name, ERRORS.name)


@pytest.fixture
def apps(running: Callable[..., Supervisor], settings: FlywheelSettings
         ) -> Iterator[tuple[Supervisor, FlywheelSettings, Any]]:
    running("kafka", "clickhouse")
    scoped = with_database(settings, f"t_keep_{uuid.uuid4().hex[:8]}")
    scoped = fast_worker_settings(scoped, consumer_group=f"t_keep_{uuid.uuid4().hex[:8]}")
    ensure_topics(scoped, [CHAT_EVENTS, FEEDBACK_EVENTS, QUARANTINE, ERRORS])
    with migrated_database(scoped) as client:
        supervisor = build_apps_supervisor(scoped)
        try:
            yield supervisor, scoped, client
        finally:
            supervisor.down(["streams-worker"])


def _each_once(produced: Produced, outcome: dict[str, Any]) -> tuple[int, int]:
    """(events of `produced` that never landed, events that landed more than once)."""
    ids: Counter[uuid.UUID] = Counter(outcome["curated"])
    ids.update(r[0] for r in outcome["quarantine"] if r[0] is not None)
    ids.update(e for e in outcome["errors"] if e is not None)
    sent = produced.chat_ids + produced.feedback_ids
    return sum(1 for i in sent if ids[i] == 0), sum(1 for i in sent if ids[i] > 1)


def _group_members_assigned(settings: FlywheelSettings) -> int:
    admin = AdminClient(settings.kafka.client_config())
    group = settings.streams.consumer_group
    [description] = [f.result(30) for f in admin.describe_consumer_groups([group]).values()]
    return sum(1 for m in description.members
               if m.assignment and m.assignment.topic_partitions)


def test_apps_up_says_healthy_only_once_the_worker_is_assigned_and_a_kill_9_is_restarted(
    apps: tuple[Supervisor, FlywheelSettings, Any],
) -> None:
    supervisor, settings, client = apps
    [row] = supervisor.up(["streams-worker"])
    assert row.healthy
    # Healthy means assigned: the group already gave this worker its partitions.
    assert _group_members_assigned(settings) == 1
    metrics = httpx.get(f"http://{settings.metrics.host}:{settings.metrics.port}/metrics",
                        timeout=5).text
    assert f"{READY_METRIC} 1.0" in metrics

    produced = produce_conversations(settings, TOPICS, conversations=800, seed=61)
    service = supervisor.get("streams-worker")
    assert wait_for(lambda: len(landed(client, settings, TOPICS)["curated"]) > 100,
                    timeout_s=120)
    keeper = supervisor.keeper_of(service)
    assert keeper is not None and keeper.child_pid is not None
    os.kill(keeper.child_pid, signal.SIGKILL)

    def restarted() -> bool:
        state = supervisor.keeper_of(service)
        return state is not None and state.restarts == 1 and state.child_pid is not None

    assert wait_for(restarted, timeout_s=60)

    def all_landed() -> bool:
        missing, _ = _each_once(produced, landed(client, settings, TOPICS))
        return missing == 0

    assert wait_for(all_landed, timeout_s=240, interval_s=1.0)
    assert _each_once(produced, landed(client, settings, TOPICS)) == (0, 0)
    status = supervisor.status_of(service)
    assert status.running and "restarted 1 times" in status.detail
    prom = service.keeper_path.with_suffix(".prom").read_text()
    assert 'flywheel_process_restarts_total{process="streams-worker"} 1' in prom
