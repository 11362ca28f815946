"""Continuous mode: train whenever a window closes with enough new examples, or on drift.

A window is attempted at most once (success, rejection or empty): the evaluations table
remembers which windows were evaluated, so restarting `watch` does not retrain them. A
firing input-drift alert (`monitoring.actions.RETRAIN_ALERTS`), or a retrain request the
alert receiver performed (`monitoring_actions`), lowers the bar to one example until a
candidate passes the gate: a request stands until an evaluation made after it published,
so a drift whose first retrained candidates were rejected (they forgot the old topics,
say) is retried on each following window instead of waiting for a new alert that may
never come. With `trainer.retrain_policy = "on_drift"`, only the first evaluation needs no
alert: afterwards the trainer waits for the users' traffic to drift instead of retraining
on every window.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from monitoring.actions import RETRAIN_ALERTS
from trainer.errors import EmptyWindowError
from trainer.window import count_examples, latest_closed_window

if TYPE_CHECKING:
    from deploy.settings import FlywheelSettings
    from trainer.pipeline import RunReport

logger = logging.getLogger(__name__)


def _last_evaluation(
    client: Any, settings: FlywheelSettings
) -> tuple[datetime | None, datetime | None]:
    """(end of the newest evaluated window, when the newest passing evaluation was made).

    Either is None when there is no such evaluation.
    """
    [(end, passed_at)] = client.query(
        "SELECT maxOrNull(window_end), maxIfOrNull(evaluated_at, passed) "
        f"FROM {settings.clickhouse.database}.evaluations FINAL WHERE model = {{model:String}}",
        parameters={"model": settings.model.name},
    ).result_rows
    return (None if end is None else _utc(end),
            None if passed_at is None else _utc(passed_at))


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def drift_requested(client: Any, settings: FlywheelSettings, since: datetime | None) -> bool:
    """Whether drift asked for retraining after `since`.

    Two signals count: an input-drift alert that fired (`alerts`), and a retrain request
    the alert receiver performed for this model (`monitoring_actions` rows with
    `action = 'retrain'` and `performed`; see monitoring/wiring.py). Always False
    without either.
    """
    db = settings.clickhouse.database
    rows = client.query(
        f"SELECT (SELECT count() FROM {db}.alerts FINAL "
        "WHERE status = 'firing' AND name IN {names:Array(String)} "
        "AND starts_at > {since:DateTime64(3, 'UTC')}) + "
        f"(SELECT count() FROM {db}.monitoring_actions "
        "WHERE action = 'retrain' AND performed AND model = {model:String} "
        "AND alert_name IN {names:Array(String)} "
        "AND requested_at > {since:DateTime64(3, 'UTC')})",
        parameters={"since": since or datetime(1970, 1, 1, tzinfo=UTC),
                    "names": sorted(RETRAIN_ALERTS), "model": settings.model.name},
    ).result_rows
    return bool(rows and rows[0][0])


def has_published(client: Any, settings: FlywheelSettings) -> bool:
    """Whether any adapter of the model was ever published."""
    rows = client.query(
        f"SELECT count() FROM {settings.clickhouse.database}.model_versions FINAL "
        "WHERE model = {model:String} AND adapter_uri != ''",
        parameters={"model": settings.model.name},
    ).result_rows
    return bool(rows and rows[0][0])


def due_window(
    client: Any, settings: FlywheelSettings, *, now: datetime
) -> tuple[datetime, datetime, str] | None:
    """The window to train on now and why, or None when nothing is due."""
    trainer = settings.trainer
    start, end = latest_closed_window(now, window_s=trainer.window_s,
                                      grace_s=trainer.window_grace_s)
    done, passed_at = _last_evaluation(client, settings)
    if done is not None and end <= done:
        return None
    new = count_examples(client, settings, start, end)
    if new >= trainer.min_new_examples and (
            trainer.retrain_policy == "every_window" or not has_published(client, settings)):
        return start, end, f"{new} new examples"
    # A request made before the last passing evaluation was answered by that run (an
    # alert that keeps firing while its retrained version is rolled out asks for nothing
    # new); a rejected candidate answers nothing.
    if new and drift_requested(client, settings, passed_at):
        return start, end, f"drift alert ({new} new examples)"
    return None


def watch(
    client: Any, settings: FlywheelSettings, *, stop: threading.Event,
    on_run: Callable[[RunReport], None] | None = None,
    on_skip: Callable[[str], None] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    progress: Callable[[str, int, int], None] | None = None,
) -> int:
    """Poll every `watch_poll_interval_s` until `stop` is set; returns the runs made.

    Raises:
        TrainerConfigError, BaseModelMissingError: bad settings (checked at the start).
    """
    from trainer.pipeline import preflight, run_window

    now = clock()
    preflight(settings, *latest_closed_window(now, window_s=settings.trainer.window_s))
    runs = 0
    attempted: set[datetime] = set()
    while not stop.is_set():
        due = due_window(client, settings, now=clock())
        if due is not None and due[1] not in attempted:
            start, end, why = due
            attempted.add(end)
            logger.info("training on [%s, %s): %s", start, end, why)
            try:
                report = run_window(client, settings, start, end, progress=progress)
            except EmptyWindowError as e:
                if on_skip:
                    on_skip(str(e))
            else:
                runs += 1
                if on_run:
                    on_run(report)
        stop.wait(settings.trainer.watch_poll_interval_s)
    return runs
