"""`flywheel monitor run`: evaluate every detector on a schedule, export and store the results."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from monitoring.drift import DriftResult
from monitoring.drift.embedding import SentenceEncoder
from monitoring.errors import MonitoringError
from monitoring.evaluate import DriftSuite
from monitoring.exporter import DriftExporter
from monitoring.store import write_evaluation
from monitoring.windows import Span, current_span, read_window, reference_span

if TYPE_CHECKING:
    from deploy.settings import FlywheelSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    """The results of one evaluation and the windows they compared."""

    evaluated_at: datetime
    reference: Span
    current: Span
    results: list[DriftResult]


class MonitorRunner:
    """Reads windows, runs the detectors, sets the gauges and writes the results.

    The ClickHouse client and the encoder are created on first use; `close` releases them.
    """

    def __init__(self, settings: FlywheelSettings, *, encoder: SentenceEncoder | None = None,
                 exporter: DriftExporter | None = None) -> None:
        self._settings = settings
        self._encoder = encoder or SentenceEncoder()
        self.exporter = exporter or DriftExporter()
        self.exporter.set_latency_thresholds(settings)
        self._suite = DriftSuite(settings.monitoring, encode=self._encoder.encode)
        self._client: Any | None = None
        self._server: Any | None = None

    def _ch(self) -> Any:
        if self._client is None:
            from deploy.clickhouse.client import get_client

            self._client = get_client(self._settings)
        return self._client

    def serve_metrics(self) -> None:
        """Expose the gauges on settings.monitoring.metrics_host:metrics_port.

        Raises:
            MonitoringError: the port is taken.
        """
        monitoring = self._settings.monitoring
        try:
            self._server = self.exporter.serve(host=monitoring.metrics_host,
                                               port=monitoring.metrics_port)
        except OSError as e:
            raise MonitoringError(
                f"cannot serve monitor metrics on {monitoring.metrics_host}:"
                f"{monitoring.metrics_port}: {e}; choose a free port with "
                "FLYWHEEL_MONITORING__METRICS_PORT"
            ) from e

    def evaluate_once(self, *, now: datetime | None = None) -> Evaluation:
        """One evaluation of every detector.

        Raises:
            MonitoringError: ClickHouse could not be read or written.
        """
        now = now or datetime.now(UTC)
        client = self._ch()
        reference = reference_span(client, self._settings, now=now)
        current = current_span(self._settings, now=now)
        limit = max(self._settings.monitoring.max_window_rows * 10, 10_000)
        results = self._suite.evaluate(read_window(client, reference, limit_rows=limit),
                                       read_window(client, current, limit_rows=limit))
        self.exporter.publish(results, finished_at_s=time.time())
        write_evaluation(client, results, evaluated_at=now, reference=reference,
                         current=current)
        for result in results:
            if result.drifted:
                logger.warning("drift: %s %s: %s", result.detector, result.labels, result.detail)
        return Evaluation(now, reference, current, results)

    def run(self, *, stop: threading.Event, max_evaluations: int | None = None) -> None:
        """Evaluate every `evaluation_interval_s` until `stop` is set; errors are logged, counted
        and retried at the next tick, so a ClickHouse restart does not end monitoring."""
        done = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.evaluate_once()
            except MonitoringError as e:
                self.exporter.evaluations.labels(outcome="error").inc()
                logger.error("evaluation failed: %s", e)
            done += 1
            if max_evaluations is not None and done >= max_evaluations:
                return
            elapsed = time.monotonic() - started
            stop.wait(max(0.0, self._settings.monitoring.evaluation_interval_s - elapsed))

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._client is not None:
            self._client.close()
            self._client = None
