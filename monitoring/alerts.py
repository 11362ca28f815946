"""Alertmanager notifications as Flywheel `Alert`s, stored and announced.

Alertmanager's webhook posts (version 4 of its payload):
``{"version": "4", "status": ..., "receiver": ..., "groupKey": ..., "alerts": [{"status",
"labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}, ...]}``.
Each entry becomes one `Alert`, written to the `alerts` table and the alerts topic.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from monitoring.errors import ReceiverError
from schemas.platform import Alert, Severity
from streams.producer import EventProducer
from streams.topics import ALERTS

if TYPE_CHECKING:
    from deploy.settings import FlywheelSettings

logger = logging.getLogger(__name__)

_ZERO_TIME = "0001-01-01T00:00:00Z"
_FRACTION = re.compile(r"(\.\d+)")
ALERT_COLUMNS = ("alert_id", "name", "status", "severity", "summary", "description",
                 "runbook_url", "labels", "fingerprint", "starts_at", "ends_at")


class AlertProducer(EventProducer[Alert]):
    """Sends `Alert`s to the alerts topic, keyed by alert name."""

    topic: ClassVar[str] = ALERTS.name
    event_type = Alert

    def key_of(self, event: Alert) -> bytes:
        return event.name.encode()


def alerts_from_webhook(payload: dict[str, Any]) -> list[Alert]:
    """Parse one Alertmanager webhook body.

    Raises:
        ReceiverError: the body is not an Alertmanager webhook payload.
    """
    entries = payload.get("alerts")
    if not isinstance(entries, list):
        raise ReceiverError("not an Alertmanager webhook payload: no `alerts` list")
    alerts = []
    for entry in entries:
        try:
            labels = {str(k): str(v) for k, v in (entry.get("labels") or {}).items()}
            annotations = entry.get("annotations") or {}
            status = entry.get("status", payload.get("status", "firing"))
            ends_at = entry.get("endsAt")
            level = labels.get("severity", "warning")
            severity = Severity(level) if level in set(Severity) else Severity.WARNING
            alerts.append(Alert(
                name=labels.get("alertname", "unnamed"),
                status="resolved" if status == "resolved" else "firing",
                severity=severity,
                summary=annotations.get("summary") or labels.get("alertname", "alert"),
                description=annotations.get("description", ""),
                runbook_url=annotations.get("runbook_url"),
                labels=labels,
                fingerprint=entry.get("fingerprint", ""),
                starts_at=parse_time(entry["startsAt"]),
                ends_at=parse_time(ends_at)
                if status == "resolved" and ends_at and ends_at != _ZERO_TIME else None,
            ))
        except (KeyError, ValueError, AttributeError, TypeError) as e:
            raise ReceiverError(f"malformed alert in the webhook payload: {e}") from e
    return alerts


def alert_row(alert: Alert) -> list[Any]:
    return [alert.alert_id, alert.name, alert.status, str(alert.severity), alert.summary,
            alert.description, alert.runbook_url or "", alert.labels, alert.fingerprint,
            alert.starts_at, alert.ends_at]


class AlertSink:
    """Writes alerts to ClickHouse and Kafka; clients are created on first use."""

    def __init__(self, settings: FlywheelSettings, *, producer_name: str = "flywheel-alerts",
                 topic: str | None = None, table: str = "alerts") -> None:
        self._settings = settings
        self._producer = AlertProducer(settings.kafka, producer_name=producer_name, topic=topic)
        self._table = table
        self._client: Any | None = None
        # The receiver writes each webhook call from its own thread, and one
        # clickhouse-connect client refuses concurrent queries in its session.
        self._lock = threading.Lock()

    def write(self, alerts: Sequence[Alert]) -> None:
        """Store then announce; both must succeed for Alertmanager to get a 200.

        Raises:
            ReceiverError: ClickHouse or Kafka did not take them (Alertmanager retries).
        """
        if not alerts:
            return
        try:
            with self._lock:
                if self._client is None:
                    from deploy.clickhouse.client import get_client

                    self._client = get_client(self._settings)
                self._client.insert(self._table, [alert_row(a) for a in alerts],
                                    column_names=list(ALERT_COLUMNS))
        except Exception as e:
            raise ReceiverError(f"could not store {len(alerts)} alerts in ClickHouse: {e}") from e
        try:
            for alert in alerts:
                self._producer.send(alert)
            self._producer.flush(10)
        except Exception as e:
            raise ReceiverError(f"could not announce alerts on {ALERTS.name}: {e}") from e
        for alert in alerts:
            logger.info("alert %s %s (%s): %s", alert.name, alert.status, alert.severity,
                        alert.summary)

    def close(self) -> None:
        self._producer.close(10)
        if self._client is not None:
            self._client.close()
            self._client = None


def parse_time(value: str) -> datetime:
    """An Alertmanager timestamp (RFC 3339, up to nanoseconds) as an aware datetime.

    Raises:
        ValueError: not a timestamp.
    """
    # Python keeps microseconds: cut Go's nanoseconds to six digits.
    trimmed = _FRACTION.sub(lambda m: m.group(1)[:7], value.replace("Z", "+00:00"))
    return datetime.fromisoformat(trimmed)
