"""Continuous mode against the real ClickHouse: when a window is due, and attempted once."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from deploy.settings import FlywheelSettings
from tests.trainer.synthetic import TURN_COLUMNS, billing_pairs, turn_rows
from trainer.watch import due_window, watch

pytestmark = pytest.mark.integration

START = datetime(2035, 6, 1, 10, tzinfo=UTC)
END = START + timedelta(hours=1)
#: Just after the window [START, END) closed and its grace period passed.
NOW = END + timedelta(seconds=61)


@pytest.fixture
def watched(trainer_settings: FlywheelSettings) -> FlywheelSettings:
    """Hour windows with a 60 s grace; 10 new examples make a window due."""
    return trainer_settings.model_copy(update={"trainer": trainer_settings.trainer.model_copy(
        update={"window_s": 3600, "window_grace_s": 60, "min_new_examples": 10,
                "watch_poll_interval_s": 0.05})})


def _chat(warehouse: Any, settings: FlywheelSettings, n: int, **kwargs: Any) -> None:
    rows, _ = turn_rows(billing_pairs(n, seed=n), start=START, topic="billing", **kwargs)
    warehouse.insert(f"{settings.clickhouse.database}.chat_turns", rows,
                     column_names=TURN_COLUMNS)


def _alert(warehouse: Any, settings: FlywheelSettings, name: str, *, at: datetime) -> None:
    warehouse.insert(
        f"{settings.clickhouse.database}.alerts",
        [[uuid.uuid4(), name, "firing", "warning", "drift", "", "", {}, uuid.uuid4().hex, at]],
        column_names=["alert_id", "name", "status", "severity", "summary", "description",
                      "runbook_url", "labels", "fingerprint", "starts_at"])


def _retrain_request(warehouse: Any, settings: FlywheelSettings, *, model: str,
                     performed: bool, at: datetime) -> None:
    # The row the alert receiver writes (monitoring/wiring.py); read here, never written
    # by the trainer.
    warehouse.insert(
        f"{settings.clickhouse.database}.monitoring_actions",
        [[uuid.uuid4(), "retrain", performed, "FlywheelEmbeddingDrift: topics moved",
          "FlywheelEmbeddingDrift", uuid.uuid4().hex, model, None, at]],
        column_names=["action_id", "action", "performed", "reason", "alert_name",
                      "fingerprint", "model", "version", "requested_at"])


def test_a_window_with_enough_new_examples_is_due(
    warehouse: Any, watched: FlywheelSettings,
) -> None:
    _chat(warehouse, watched, 12)
    assert due_window(warehouse, watched, now=NOW) == (START, END, "12 new examples")


def test_a_window_is_not_due_before_its_grace_period_ends(
    warehouse: Any, watched: FlywheelSettings,
) -> None:
    _chat(warehouse, watched, 12)
    # 30 s after the close the latest closed window is still [START - 1 h, START): empty.
    assert due_window(warehouse, watched, now=END + timedelta(seconds=30)) is None


def test_too_few_new_examples_without_drift_are_not_due(
    warehouse: Any, watched: FlywheelSettings,
) -> None:
    _chat(warehouse, watched, 3)
    assert due_window(warehouse, watched, now=NOW) is None


def test_a_firing_input_drift_alert_lowers_the_bar(
    warehouse: Any, watched: FlywheelSettings,
) -> None:
    _chat(warehouse, watched, 3)
    _alert(warehouse, watched, "FlywheelEmbeddingDrift", at=START + timedelta(minutes=5))
    assert due_window(warehouse, watched, now=NOW) == (
        START, END, "drift alert (3 new examples)")


def test_output_drift_alone_does_not_ask_for_retraining(
    warehouse: Any, watched: FlywheelSettings,
) -> None:
    _chat(warehouse, watched, 3)
    _alert(warehouse, watched, "FlywheelModelOutputDrift", at=START + timedelta(minutes=5))
    assert due_window(warehouse, watched, now=NOW) is None


def test_a_performed_retrain_request_for_the_model_lowers_the_bar(
    warehouse: Any, watched: FlywheelSettings,
) -> None:
    _chat(warehouse, watched, 3)
    _retrain_request(warehouse, watched, model=watched.model.name, performed=True,
                     at=START + timedelta(minutes=5))
    assert due_window(warehouse, watched, now=NOW) == (
        START, END, "drift alert (3 new examples)")


@pytest.mark.parametrize("case", ["not performed", "another model", "before the last window"])
def test_a_retrain_request_that_does_not_apply_is_ignored(
    warehouse: Any, watched: FlywheelSettings, case: str,
) -> None:
    _chat(warehouse, watched, 3)
    if case == "before the last window":
        # The previous window was evaluated and published; the request predates that.
        _evaluation(warehouse, watched, START - timedelta(hours=1), START, passed=True,
                    at=START)
    _retrain_request(warehouse, watched, model="other-model" if case == "another model"
                     else watched.model.name, performed=case != "not performed",
                     at=START - timedelta(minutes=5) if case == "before the last window"
                     else START + timedelta(minutes=5))
    assert due_window(warehouse, watched, now=NOW) is None


def _evaluation(warehouse: Any, settings: FlywheelSettings, start: datetime, end: datetime,
                *, passed: bool, at: datetime) -> None:
    warehouse.insert(f"{settings.clickhouse.database}.evaluations",
                     [[uuid.uuid4(), settings.model.name, 2, start, end, passed,
                       "published" if passed else "forgets", at]],
                     column_names=["evaluation_id", "model", "candidate_version",
                                   "window_start", "window_end", "passed", "reason",
                                   "evaluated_at"])


def test_a_retrain_request_stands_until_a_candidate_passes(
    warehouse: Any, watched: FlywheelSettings,
) -> None:
    # The request came before the previous window was evaluated, and that candidate was
    # rejected: the drift is still unanswered, so the next window is retrained too.
    _chat(warehouse, watched, 3)
    _retrain_request(warehouse, watched, model=watched.model.name, performed=True,
                     at=START - timedelta(minutes=30))
    _evaluation(warehouse, watched, START - timedelta(hours=1), START, passed=False,
                at=START - timedelta(minutes=20))
    assert due_window(warehouse, watched, now=NOW) == (
        START, END, "drift alert (3 new examples)")

    # Once a later candidate passed, the same request asks for nothing more.
    _evaluation(warehouse, watched, START - timedelta(minutes=40), START - timedelta(minutes=10),
                passed=True, at=START - timedelta(minutes=5))
    assert due_window(warehouse, watched, now=NOW) is None


def test_an_evaluated_window_is_not_due_again(
    warehouse: Any, watched: FlywheelSettings,
) -> None:
    _chat(warehouse, watched, 12)
    warehouse.insert(f"{watched.clickhouse.database}.evaluations",
                     [[uuid.uuid4(), watched.model.name, 2, START, END, "rejected", NOW]],
                     column_names=["evaluation_id", "model", "candidate_version",
                                   "window_start", "window_end", "reason", "evaluated_at"])
    assert due_window(warehouse, watched, now=NOW) is None


def test_watch_attempts_a_due_window_once_even_when_it_cannot_train(
    warehouse: Any, watched: FlywheelSettings,
) -> None:
    # One conversation only: due by count, but no validation split, so every attempt
    # would end in EmptyWindowError and nothing is recorded in `evaluations`.
    _chat(warehouse, watched, 12, per_conversation=12)
    stop = threading.Event()
    polls: list[datetime] = []
    skipped: list[str] = []

    def clock() -> datetime:
        polls.append(NOW)
        if len(polls) >= 6:
            stop.set()
        return NOW

    runs = watch(warehouse, watched, stop=stop, clock=clock, on_skip=skipped.append)

    assert runs == 0
    assert len(polls) >= 5  # several polls found the same window due
    assert len(skipped) == 1 and "at least two conversations" in skipped[0]


def test_a_quarantine_or_feedback_rate_change_does_not_ask_for_retraining(
    warehouse: Any, watched: FlywheelSettings,
) -> None:
    _chat(warehouse, watched, 3)
    _alert(warehouse, watched, "FlywheelFeedbackRateChange", at=START + timedelta(minutes=5))
    assert due_window(warehouse, watched, now=NOW) is None
