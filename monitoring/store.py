"""Each evaluation's results into ClickHouse (`drift_evaluations`), for plots over time."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from monitoring.drift import DriftResult
from monitoring.errors import MonitoringError
from monitoring.windows import Span

logger = logging.getLogger(__name__)

COLUMNS = (
    "evaluation_id", "evaluated_at", "detector", "tenant", "model_version", "statistic",
    "threshold", "p_value", "status", "n_reference", "n_current", "reference_source",
    "reference_start", "reference_end", "current_start", "current_end", "detail",
)


def write_evaluation(
    client: Any, results: Sequence[DriftResult], *, evaluated_at: datetime, reference: Span,
    current: Span,
) -> uuid.UUID:
    """Insert one row per result under one evaluation id; returns the id.

    Raises:
        MonitoringError: ClickHouse refused the insert.
    """
    evaluation_id = uuid.uuid4()
    rows = [
        [evaluation_id, evaluated_at, r.detector, r.labels.get("tenant", "all"),
         r.labels.get("model_version", "all"), r.statistic, r.threshold, r.p_value, r.status,
         r.n_reference, r.n_current, reference.source, reference.start, reference.end,
         current.start, current.end, r.detail[:2000]]
        for r in results
    ]
    try:
        client.insert("drift_evaluations", rows, column_names=list(COLUMNS))
    except Exception as e:
        raise MonitoringError(
            f"could not write {len(rows)} drift results to drift_evaluations: {e}; run "
            "`flywheel warehouse migrate` if the table is missing"
        ) from e
    return evaluation_id
