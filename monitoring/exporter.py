"""Prometheus gauges of `flywheel monitor run`: each detector's statistic and threshold.

Every gauge carries `detector`, `tenant` and `model_version` labels, so one rule per
family reads `flywheel_drift_statistic > on(...) flywheel_drift_threshold`. A statistic
that could not be computed (too few rows) is NaN: a comparison with NaN is false, so it
never fires an alert, and `flywheel_drift_insufficient_data` says why it is silent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from monitoring.drift import DriftResult

if TYPE_CHECKING:
    from deploy.settings import FlywheelSettings

logger = logging.getLogger(__name__)

_LABELS = ("detector", "tenant", "model_version")


class DriftExporter:
    """The monitor's own registry and /metrics endpoint (started by `serve`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.statistic = Gauge("flywheel_drift_statistic", "Drift statistic of a detector.",
                               _LABELS, registry=r)
        self.threshold = Gauge("flywheel_drift_threshold",
                               "Drift is declared when the statistic exceeds this.",
                               _LABELS, registry=r)
        self.p_value = Gauge("flywheel_drift_p_value", "p-value of the detector's test (NaN "
                             "for detectors without one).", _LABELS, registry=r)
        self.detected = Gauge("flywheel_drift_detected", "1 when the detector sees drift.",
                              _LABELS, registry=r)
        self.insufficient = Gauge("flywheel_drift_insufficient_data",
                                  "1 when a window held too few rows to decide.",
                                  _LABELS, registry=r)
        self.current_rows = Gauge("flywheel_drift_window_rows", "Rows in a window.",
                                  (*_LABELS, "window"), registry=r)
        self.latency_threshold = Gauge(
            "flywheel_latency_p99_threshold_seconds",
            "p99 latency above which FlywheelModelLatencyHigh fires, per model (settings).",
            ["model"], registry=r)
        self.evaluations = Counter("flywheel_monitor_evaluations",
                                   "Evaluations run, by outcome.", ["outcome"], registry=r)
        self.last_evaluation = Gauge("flywheel_monitor_last_evaluation_timestamp_seconds",
                                     "When the last evaluation finished.", registry=r)
        self._seen: set[tuple[str, str, str]] = set()

    def set_latency_thresholds(self, settings: FlywheelSettings) -> None:
        """Export the p99 threshold of the served model and of every configured model."""
        thresholds = dict(settings.monitoring.latency_p99_thresholds_s)
        thresholds.setdefault(settings.model.name, settings.monitoring.default_latency_p99_s)
        for model, seconds in thresholds.items():
            self.latency_threshold.labels(model=model).set(seconds)

    def publish(self, results: Iterable[DriftResult], *, finished_at_s: float) -> None:
        """Set every gauge from one evaluation; scopes that vanished are removed."""
        seen: set[tuple[str, str, str]] = set()
        for result in results:
            key = (result.detector, result.labels.get("tenant", "all"),
                   result.labels.get("model_version", "all"))
            seen.add(key)
            self.statistic.labels(*key).set(result.statistic)
            self.threshold.labels(*key).set(result.threshold)
            self.p_value.labels(*key).set(
                result.p_value if result.p_value is not None else float("nan"))
            self.detected.labels(*key).set(1.0 if result.drifted else 0.0)
            self.insufficient.labels(*key).set(
                1.0 if result.status == "insufficient_data" else 0.0)
            self.current_rows.labels(*key, "reference").set(result.n_reference)
            self.current_rows.labels(*key, "current").set(result.n_current)
        for key in self._seen - seen:
            for gauge in (self.statistic, self.threshold, self.p_value, self.detected,
                          self.insufficient):
                gauge.remove(*key)
            for window in ("reference", "current"):
                self.current_rows.remove(*key, window)
        self._seen = seen
        self.evaluations.labels(outcome="ok").inc()
        self.last_evaluation.set(finished_at_s)

    def serve(self, *, host: str, port: int) -> object:
        """Start the /metrics HTTP server in a daemon thread; returns the server.

        Raises:
            OSError: the port is taken; choose another with FLYWHEEL_MONITORING__METRICS_PORT.
        """
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        logger.info("monitor metrics on http://%s:%d/metrics", host, port)
        return server
