"""The alerts Flywheel raises itself, sent to Alertmanager like the rules' alerts.

Prometheus' rules cover what metrics show. Some conditions only a Flywheel process sees:
the controller refusing a version (`FlywheelModelSwapFailed`) or dropping a canary
(`FlywheelCanaryRolledBack`), the model missing from Triton (`FlywheelModelNotServing`),
an automatic action of the receiver (`FlywheelAutomaticAction`). `PlatformAlerts.send`
posts each to Alertmanager's API, so it takes the same road as every rule's alert:
`flywheel alerts list` and `flywheel status`, silences and inhibition, the webhook to
`flywheel alerts receiver` (the `alerts` table and the alerts topic) and whatever human
channel production adds (`deploy/alertmanager/`).

When Alertmanager cannot be reached, the alert is written to the `alerts` table and the
alerts topic directly (`AlertSink`), so it never lives only in a log.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from monitoring.alertmanager import AlertmanagerClient
from monitoring.alerts import AlertSink
from monitoring.errors import AlertmanagerError

if TYPE_CHECKING:
    from deploy.settings import FlywheelSettings
    from schemas.platform import Alert

logger = logging.getLogger(__name__)


def runbook_of(alert_name: str) -> str:
    """The runbook every Flywheel alert has, relative to the repository."""
    return f"docs/runbooks/{alert_name}.md"


class PlatformAlerts:
    """Sends Flywheel's own alerts to Alertmanager; the fallback sink is made on first use.

    `fallback_topic` names the alerts topic the fallback writes to (tests use their own).
    """

    def __init__(self, settings: FlywheelSettings, *, producer_name: str = "flywheel-alerts",
                 fallback_topic: str | None = None, fallback: AlertSink | None = None) -> None:
        self._settings = settings
        self._alertmanager = AlertmanagerClient(settings.alertmanager.http_url)
        self._hold_s = settings.monitoring.platform_alert_hold_s
        self._producer_name = producer_name
        self._fallback_topic = fallback_topic
        self._fallback = fallback
        self._owns_fallback = fallback is None
        self._lock = threading.Lock()

    def send(self, alert: Alert) -> None:
        """Post one alert; see `send_all`."""
        self.send_all([alert])

    def send_all(self, alerts: Sequence[Alert]) -> None:
        """Post alerts to Alertmanager, or store them directly when it is unreachable.

        An alert without a runbook gets `docs/runbooks/<name>.md`.

        Raises:
            ReceiverError: neither Alertmanager nor the direct write took them.
        """
        alerts = [a if a.runbook_url else a.model_copy(update={"runbook_url": runbook_of(a.name)})
                  for a in alerts]
        if not alerts:
            return
        try:
            self._alertmanager.post(alerts, hold_s=self._hold_s)
        except AlertmanagerError as e:
            logger.error("alerts %s not posted to Alertmanager (%s); writing them to the "
                         "alerts table and topic directly", [a.name for a in alerts], e)
            self._fallback_sink().write(alerts)
            return
        for alert in alerts:
            logger.info("alert %s %s posted to Alertmanager: %s", alert.name, alert.status,
                        alert.summary)

    def _fallback_sink(self) -> AlertSink:
        with self._lock:
            if self._fallback is None:
                self._fallback = AlertSink(self._settings, producer_name=self._producer_name,
                                           topic=self._fallback_topic)
            return self._fallback

    def close(self) -> None:
        if self._owns_fallback and self._fallback is not None:
            try:
                self._fallback.close()
            except Exception as e:  # noqa: BLE001 - closing must not hide the caller's error
                logger.error("alerts undelivered at close: %s", e)
            self._fallback = None
