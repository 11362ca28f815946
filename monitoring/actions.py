"""Automatic actions on alerts: retrain on drift, roll back a freshly promoted version.

Both are off by default (`monitoring.auto_retrain_on_drift`, `monitoring.auto_rollback`).
Every decision, taken or not, is recorded in `monitoring_actions` and announced on the
alerts topic as an info `Alert` named `FlywheelAutomaticAction`, so nothing changes the
served model without a trace.

The trainer and inference sides plug in with two callables:
``retrain(model: str, reason: str) -> None`` and ``rollback(model: str, version: int) -> None``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from schemas.platform import Alert, Severity

if TYPE_CHECKING:
    from deploy.settings import FlywheelSettings

logger = logging.getLogger(__name__)

#: Drift of what users send: training on the new window is the remedy. Not here: output
#: drift (expected after every promotion: look, or roll back) and a change of the
#: negative-feedback or quarantine rate (a bad adapter or changed filters; retraining on
#: that window would learn the problem).
RETRAIN_ALERTS = frozenset({"FlywheelEmbeddingDrift", "FlywheelFeatureDrift"})
ROLLBACK_ALERTS = frozenset({"FlywheelModelLatencyHigh", "FlywheelModelErrorRateHigh",
                             "FlywheelGatewayLatencyHigh"})
ACTION_COLUMNS = ("action_id", "action", "performed", "reason", "alert_name", "fingerprint",
                  "model", "version", "requested_at")

Retrain = Callable[[str, str], None]
Rollback = Callable[[str, int], None]
PromotedAt = Callable[[str, int], "datetime | None"]


@dataclass(frozen=True)
class ActionRecord:
    """One automatic decision."""

    action: str
    performed: bool
    reason: str
    alert: Alert
    model: str
    version: int | None
    requested_at: datetime


class ActionDispatcher:
    """Turns firing alerts into retrain requests and rollbacks, as the settings allow."""

    def __init__(
        self, settings: FlywheelSettings, *, retrain: Retrain | None = None,
        rollback: Rollback | None = None, promoted_at: PromotedAt | None = None,
        record: Callable[[ActionRecord], None] | None = None,
    ) -> None:
        self._settings = settings
        self._retrain = retrain
        self._rollback = rollback
        self._promoted_at = promoted_at
        self._record = record or (lambda _r: None)
        self._done: set[str] = set()

    def handle(self, alerts: Sequence[Alert]) -> list[ActionRecord]:
        """Decide for each newly firing alert; each fingerprint acts at most once."""
        records = []
        for alert in alerts:
            if alert.status != "firing" or alert.fingerprint in self._done:
                continue
            record = self._decide(alert)
            if record is None:
                continue
            self._done.add(alert.fingerprint)
            self._record(record)
            records.append(record)
            logger.warning("automatic action %s (performed=%s) for %s: %s", record.action,
                           record.performed, alert.name, record.reason)
        return records

    def _decide(self, alert: Alert) -> ActionRecord | None:
        monitoring = self._settings.monitoring
        model = alert.labels.get("model", self._settings.model.name)
        now = datetime.now(UTC)
        if alert.name in RETRAIN_ALERTS:
            if not monitoring.auto_retrain_on_drift or self._retrain is None:
                return ActionRecord("retrain", False, "monitoring.auto_retrain_on_drift is off"
                                    if not monitoring.auto_retrain_on_drift
                                    else "no retrain hook is wired", alert, model, None, now)
            reason = f"{alert.name}: {alert.summary}"
            self._retrain(model, reason)
            return ActionRecord("retrain", True, reason, alert, model, None, now)
        if alert.name in ROLLBACK_ALERTS:
            version = _int(alert.labels.get("version"))
            if version is None:
                return None
            promoted = self._promoted_at(model, version) if self._promoted_at else None
            fresh = promoted is not None and now - promoted <= timedelta(
                seconds=monitoring.fresh_promotion_s)
            if not fresh:
                return ActionRecord("rollback", False, f"version {version} was not promoted in "
                                    f"the last {monitoring.fresh_promotion_s} s", alert, model,
                                    version, now)
            if not monitoring.auto_rollback or self._rollback is None:
                return ActionRecord("rollback", False, "monitoring.auto_rollback is off"
                                    if not monitoring.auto_rollback
                                    else "no rollback hook is wired", alert, model, version, now)
            self._rollback(model, version)
            return ActionRecord("rollback", True, f"{alert.name} on version {version}, promoted "
                                f"at {promoted:%H:%M:%S}", alert, model, version, now)
        return None


def announcement(record: ActionRecord) -> Alert:
    """The `Alert` that tells on-call an automatic action happened (or was held back)."""
    verb = "performed" if record.performed else "skipped"
    return Alert(
        name="FlywheelAutomaticAction", status="firing", severity=Severity.INFO,
        summary=f"automatic {record.action} {verb} for {record.model}"
        + (f" version {record.version}" if record.version else "") + f" ({record.alert.name})",
        description=record.reason, labels={"action": record.action, "model": record.model,
                                           "trigger": record.alert.name},
        fingerprint=f"action-{record.alert.fingerprint}", starts_at=record.requested_at,
    )


def action_row(record: ActionRecord) -> list[Any]:
    return [uuid.uuid4(), record.action, record.performed, record.reason, record.alert.name,
            record.alert.fingerprint, record.model, record.version, record.requested_at]


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
