"""The stream worker rides out a broker and a ClickHouse outage without exiting.

Both outages are real: the broker's processes are frozen with SIGSTOP for longer than the
worker's session timeout (the group then drops the worker: commits and consumes are
refused with UNKNOWN_MEMBER_ID until it rejoins), and the ClickHouse server is stopped
for longer than the old retry budget and started again. The worker is never restarted;
afterwards every record lands exactly once under FINAL.

They are as short as they can be while still past those limits (a 6 s session timeout,
2 insert retries); `test_outage_soak.py` runs the 60 s figures.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings
from tests.streams.worker_harness import (
    Produced,
    assert_conserved,
    create_topics,
    fast_worker_settings,
    landed_total,
    produce_conversations,
    start_worker,
    stop_worker,
    wait_for,
)

pytestmark = pytest.mark.integration

SESSION_TIMEOUT_MS = 6000  # the broker's group.min.session.timeout.ms
#: The old worker gave up after sink_retry_max retries (0.2 s + 0.4 s here).
RETRY_MAX = 2


@pytest.fixture(scope="module")
def worker_settings(migrated: FlywheelSettings) -> FlywheelSettings:
    return fast_worker_settings(migrated, session_timeout_ms=SESSION_TIMEOUT_MS,
                                sink_retry_max=RETRY_MAX, sink_backoff_max_s=1.0)



def frozen_broker(stack: Supervisor, seconds: float, then: Callable[[], None]) -> None:
    """SIGSTOP every process of the local broker for `seconds`, SIGCONT, then `then()`."""
    pid = stack.pid_of(stack.get("kafka"))
    assert pid is not None, "the test stack's Kafka is not running"
    os.killpg(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)  # the outage itself: it must outlast the session timeout
    finally:
        os.killpg(pid, signal.SIGCONT)
    then()


def stopped_clickhouse(stack: Supervisor, seconds: float, meanwhile: Callable[[], None]
                       ) -> None:
    """Stop the local ClickHouse server, run `meanwhile()`, wait `seconds`, start it."""
    stack.down(["clickhouse"])
    try:
        meanwhile()  # records arrive while the warehouse is away
        time.sleep(seconds)
    finally:
        stack.up(["clickhouse"])


def _run_through(outage: Callable[[Callable[[], None]], None],
                 worker_settings: FlywheelSettings, client: Any, log: Path, *, seed: int,
                 conversations: int = 300) -> tuple[Produced, dict[str, Any], str]:
    base = f"t_out_{uuid.uuid4().hex[:8]}"
    topics = create_topics(worker_settings, base)
    first = produce_conversations(worker_settings, topics, conversations=conversations,
                                  seed=seed)
    worker = start_worker(worker_settings, topics, group=base, log=log)
    try:
        # The outage starts while most records are still to come (read ahead or not yet).
        partial = wait_for(client, worker_settings, topics, total=max(1, first.total // 10),
                           workers=[worker])
        assert landed_total(partial) < first.total, "the stream ended before the outage"
        later: list[Produced] = []
        outage(lambda: later.append(produce_conversations(
            worker_settings, topics, conversations=100, seed=seed + 1)))
        assert worker.poll() is None, "the worker exited during the outage; see its log"
        [second] = later
        produced = Produced(chat_ids=first.chat_ids + second.chat_ids,
                            feedback_ids=first.feedback_ids + second.feedback_ids)
        outcome = wait_for(client, worker_settings, topics, total=produced.total,
                           workers=[worker], timeout_s=240)
    finally:
        code = stop_worker(worker)
    assert code == 0
    db = worker_settings.clickhouse.database
    final, distinct = client.query(
        f"SELECT count(), uniqExact(event_id) FROM {db}.chat_turns FINAL "
        "WHERE source_topic = {t:String}", parameters={"t": topics.chat}).result_rows[0]
    assert final == distinct
    return produced, outcome, log.read_text()


def test_the_worker_rides_out_a_broker_frozen_past_its_session_timeout(
    running: Callable[..., Supervisor], worker_settings: FlywheelSettings, client: Any,
    tmp_path: Path,
) -> None:
    stack = running("kafka")
    produced, outcome, log = _run_through(
        lambda then: frozen_broker(stack, 2.0 * SESSION_TIMEOUT_MS / 1000, then),
        worker_settings,
        client, tmp_path / "worker.log", seed=41, conversations=1500)
    assert_conserved(produced, outcome)
    # The outage did outlast the session: the group dropped the worker, which rejoined.
    assert "lost partitions" in log


def test_the_worker_rides_out_a_clickhouse_outage_past_the_old_retry_budget(
    running: Callable[..., Supervisor], worker_settings: FlywheelSettings, client: Any,
    tmp_path: Path,
) -> None:
    stack = running("clickhouse")
    produced, outcome, log = _run_through(
        lambda meanwhile: stopped_clickhouse(stack, 5.0, meanwhile), worker_settings, client,
        tmp_path / "worker.log", seed=51)
    assert_conserved(produced, outcome)
    assert "ClickHouse does not answer" in log
