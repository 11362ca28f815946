"""The reference window: the serving adapter's training window, or the configured period
while the bare base (which has no training window) serves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from deploy.settings import FlywheelSettings
from monitoring.windows import reference_span
from tests.monitoring.traffic import MODEL_VERSION_COLUMNS, serving_version


@pytest.mark.integration
def test_reference_is_the_configured_period_while_the_bare_base_serves(
    warehouse: Any, monitoring_settings: FlywheelSettings,
) -> None:
    now = datetime.now(UTC)
    model = monitoring_settings.model.name
    base = serving_version(model, version=1, start=datetime(1970, 1, 1, tzinfo=UTC),
                           end=datetime(1970, 1, 1, tzinfo=UTC))
    base[MODEL_VERSION_COLUMNS.index("train_rows")] = 0
    warehouse.insert("model_versions", [base], column_names=MODEL_VERSION_COLUMNS)

    span = reference_span(warehouse, monitoring_settings, now=now)

    assert span.source == "configured_period"
    assert span.end == now - timedelta(seconds=monitoring_settings.monitoring.current_window_s)


@pytest.mark.integration
def test_reference_is_the_training_window_of_a_serving_adapter(
    warehouse: Any, monitoring_settings: FlywheelSettings,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    start, end = now - timedelta(hours=2), now - timedelta(hours=1)
    warehouse.insert("model_versions", [serving_version(
        monitoring_settings.model.name, version=2, start=start, end=end)],
        column_names=MODEL_VERSION_COLUMNS)

    span = reference_span(warehouse, monitoring_settings, now=now)

    assert (span.source, span.start, span.end) == ("serving_version:2", start, end)
