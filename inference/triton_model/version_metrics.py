"""Per adapter version metrics of the Triton model, on Triton's own /metrics endpoint.

Triton labels its `nv_inference_*` series with the version folder it loaded, which is
now only the runtime: the adapter a request used is switched inside the model. These
series carry the version that answered, as the `version` label:

- `flywheel_model_request_duration_seconds` (histogram): from the start of the batch's
  generation to its answers (Triton's queue time is in `nv_inference_queue_duration_us`);
- `flywheel_model_request_success` / `flywheel_model_request_failure` (counters,
  failures with `reason` = `bad_request` or `generation`);
- `flywheel_model_active_version` (gauge): the version the instance serves.

Copied beside model.py into every version folder; it runs inside the Triton stub. A
Triton without Python-backend custom metrics just gets no series: metrics never fail a
request.
"""

from __future__ import annotations

import logging
from typing import Any

import triton_python_backend_utils as pb_utils

logger = logging.getLogger(__name__)

DURATION_BUCKETS_S = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10]


class VersionMetrics:
    """The model's per-version series; every method is a no-op when metrics are missing."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._metrics: dict[tuple[str, ...], Any] = {}
        try:
            family = pb_utils.MetricFamily
            self._duration = family(
                name="flywheel_model_request_duration_seconds",
                description="Generation time of answered requests, by the adapter version "
                "that answered (Triton's queue time excluded).", kind=family.HISTOGRAM)
            self._success = family(
                name="flywheel_model_request_success",
                description="Answered requests, by the adapter version that answered.",
                kind=family.COUNTER)
            self._failure = family(
                name="flywheel_model_request_failure",
                description="Failed requests, by adapter version and reason.",
                kind=family.COUNTER)
            self._active = family(
                name="flywheel_model_active_version",
                description="The adapter version the model serves.", kind=family.GAUGE)
        except Exception as e:  # noqa: BLE001 - an older Triton: serve without these series
            logger.warning("no per-version metrics: %s", e)
            self._duration = None

    def _metric(self, family: Any, *labels: str, **options: Any) -> Any:
        key = (str(id(family)), *labels)
        if key not in self._metrics:
            names = ("version", "reason")[: len(labels)]
            self._metrics[key] = family.Metric(
                labels={"model": self._model, **dict(zip(names, labels, strict=True))},
                **options)
        return self._metrics[key]

    def answered(self, version: int, *, count: int, duration_s: float) -> None:
        if self._duration is None:
            return
        try:
            histogram = self._metric(self._duration, str(version), buckets=DURATION_BUCKETS_S)
            for _ in range(count):
                histogram.observe(duration_s)
            self._metric(self._success, str(version)).increment(count)
        except Exception as e:  # noqa: BLE001 - metrics never fail a request
            logger.warning("metrics not updated: %s", e)

    def failed(self, version: int, *, reason: str, count: int = 1) -> None:
        if self._duration is None:
            return
        try:
            self._metric(self._failure, str(version), reason).increment(count)
        except Exception as e:  # noqa: BLE001
            logger.warning("metrics not updated: %s", e)

    def activated(self, version: int) -> None:
        if self._duration is None:
            return
        try:
            self._metric(self._active).set(version)
        except Exception as e:  # noqa: BLE001
            logger.warning("metrics not updated: %s", e)
