"""Default wiring of the receiver: the alert sink and the automatic actions' hooks.

Retrain requests are the `monitoring_actions` rows with `action = 'retrain'` and
`performed = true` (the trainer's watch mode reads them); rollbacks call the inference
side's `SwapController.rollback()`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from monitoring.actions import (
    ACTION_COLUMNS,
    ActionDispatcher,
    ActionRecord,
    action_row,
    announcement,
)
from monitoring.alerts import AlertSink
from monitoring.platform_alerts import PlatformAlerts

if TYPE_CHECKING:
    from deploy.settings import FlywheelSettings

logger = logging.getLogger(__name__)


def alert_sink(settings: FlywheelSettings) -> AlertSink:
    return AlertSink(settings)


def dispatcher(settings: FlywheelSettings, *, sink: AlertSink) -> ActionDispatcher:
    """Actions recorded in ClickHouse and announced through Alertmanager.

    The announcement comes back through the webhook into `sink` (the `alerts` table and
    topic) like every alert, and straight into `sink` when Alertmanager is unreachable.
    """
    announcements = PlatformAlerts(settings, fallback=sink)

    def record(entry: ActionRecord) -> None:
        from deploy.clickhouse.client import get_client

        client = get_client(settings)
        try:
            client.insert("monitoring_actions", [action_row(entry)],
                          column_names=list(ACTION_COLUMNS))
        finally:
            client.close()
        announcements.send(announcement(entry))

    def retrain(model: str, reason: str) -> None:
        logger.warning("retrain requested for %s: %s", model, reason)

    def rollback(model: str, version: int) -> None:
        from inference.swap import SwapController

        # The controller records the switch in model_versions (`rolled_back` / `serving`).
        # A rollback that fails raises FlywheelModelSwapFailed like the controller's swaps.
        result = SwapController(settings, model=model,
                                alert_sink=announcements.send).rollback()
        logger.warning("rolled back %s from version %d: %s", model, version, result)

    def promoted_at(model: str, version: int) -> datetime | None:
        from deploy.clickhouse.client import get_client

        client = get_client(settings, readonly=True)
        try:
            rows: list[Any] = client.query(
                "SELECT updated_at FROM model_versions FINAL WHERE model = {m:String} AND "
                "version = {v:UInt32} AND status = 'serving'",
                parameters={"m": model, "v": version}).result_rows
        finally:
            client.close()
        return rows[0][0].replace(tzinfo=UTC) if rows else None

    return ActionDispatcher(settings, retrain=retrain, rollback=rollback,
                            promoted_at=promoted_at, record=record)
