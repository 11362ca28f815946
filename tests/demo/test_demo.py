"""`flywheel demo --quick` end to end: the loop really closes on the real stack.

Runs the same `DemoRunner` the CLI runs, on the test stack's ports and state folder, and
checks what the issue asks of the short variant: versions 2 and 3 published and served,
no failed gateway request, the drift alert fired (before version 3) and resolved, every
replayed event accounted for, and version 3 better than version 1 on the new topics.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.demo.plan import make_plan
from deploy.demo.run import DemoOutcome, DemoRunner
from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings

#: The demo's own time budget below, plus the stack and teardown: when the demo runs out
#: of time its own error (what it waited for, where to look) ends the test, not pytest's
#: default per-test timeout.
DEMO_BUDGET_S = 1200
pytestmark = pytest.mark.timeout(DEMO_BUDGET_S + 300)


@pytest.fixture(scope="module")
def outcome(settings: FlywheelSettings, stack: Supervisor) -> Iterator[tuple[DemoRunner,
                                                                             DemoOutcome]]:
    from deploy.local.stack import build_apps_supervisor

    runner = DemoRunner(settings, make_plan(settings, quick=True, time_budget_s=DEMO_BUDGET_S))
    try:
        yield runner, runner.run()
    finally:
        build_apps_supervisor(runner.settings).down()


@pytest.mark.e2e
@pytest.mark.slow
def test_quick_demo_serves_versions_2_and_3_without_a_failed_request(
    outcome: tuple[DemoRunner, DemoOutcome],
) -> None:
    _runner, result = outcome
    assert [v for v, _ in result.served] == [1, 2, 3]
    assert result.chats > 100
    assert result.failed_requests == []
    assert result.problems == []


@pytest.mark.e2e
@pytest.mark.slow
def test_quick_demo_drift_alert_fires_before_version_3_and_resolves_after(
    outcome: tuple[DemoRunner, DemoOutcome],
) -> None:
    _runner, result = outcome
    served_at = dict(result.served)
    marks = result.marks
    assert marks["shift"] < marks["drift_fired"] < served_at[3] < marks["drift_resolved"]


@pytest.mark.e2e
@pytest.mark.slow
def test_quick_demo_accounts_for_every_replayed_event(
    outcome: tuple[DemoRunner, DemoOutcome],
) -> None:
    _runner, result = outcome
    accounting = result.accounting
    assert accounting is not None
    # Two chat events per answered request, one per feedback, plus accepted hostile turns.
    assert accounting.records >= 2 * result.chats + sum(result.feedback.values())
    assert accounting.missing == 0 and accounting.in_two_places == 0
    assert accounting.quarantined > 0  # the hostile share
    assert accounting.rejected_bodies_quarantined >= result.hostile_rejected > 0


@pytest.mark.e2e
@pytest.mark.slow
def test_quick_demo_version_3_knows_the_new_topics_better_than_the_base(
    outcome: tuple[DemoRunner, DemoOutcome],
) -> None:
    _runner, result = outcome
    by_version = {p.version: p for p in result.perplexity}
    assert by_version[3].new_topics < by_version[1].new_topics


@pytest.mark.e2e
@pytest.mark.slow
def test_quick_demo_report_has_every_plot_and_its_query(
    outcome: tuple[DemoRunner, DemoOutcome], tmp_path: Path,
) -> None:
    from deploy.clickhouse.client import get_client
    from deploy.demo.report import write_report

    runner, result = outcome
    client = get_client(runner.settings, readonly=True)
    try:
        path = write_report(client, result, folder=tmp_path / "report",
                            database=runner.settings.clickhouse.database,
                            config_path=runner.config_path())
    finally:
        client.close()
    page = path.read_text()
    assert page.count("<img ") == 5
    assert "FROM drift_evaluations" in page and "FROM quarantine FINAL" in page
    assert f"database <code>{runner.settings.clickhouse.database}</code>" in page
    assert f"flywheel --config {runner.config_path()} sql" in page
    assert sorted(p.name for p in path.parent.glob("*.png")) == [
        "drift.png", "latency.png", "perplexity.png", "quarantine.png", "throughput.png"]
