"""The reference and current windows, read from ClickHouse.

The reference is the data the served adapter was trained on: the training window of the
model's `serving` row in `model_versions`. Without one (nothing trained yet, or another
model), it is the configured period just before the current window.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from monitoring.errors import MonitoringError

if TYPE_CHECKING:
    from deploy.settings import FlywheelSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Span:
    """A time window [start, end) and where its bounds came from."""

    start: datetime
    end: datetime
    source: str


@dataclass
class WindowData:
    """What the detectors need from one window."""

    user_texts: list[str] = field(default_factory=list)
    user_tenants: list[str] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)
    lengths: list[float] = field(default_factory=list)
    toxicity: list[float] = field(default_factory=list)
    answers: dict[str, tuple[list[str], list[float]]] = field(default_factory=dict)
    """model_version -> (answer texts, answer toxicity)."""
    negative_feedback: list[bool] = field(default_factory=list)
    quarantined: list[bool] = field(default_factory=list)


def reference_span(client: Any, settings: FlywheelSettings, *, now: datetime) -> Span:
    """The serving version's training window, or the configured fallback period.

    Raises:
        MonitoringError: ClickHouse could not be queried.
    """
    try:
        rows = client.query(
            "SELECT version, window_start, window_end FROM model_versions FINAL "
            # The bare base's row (no training window, train_rows 0) uses the fallback.
            "WHERE model = {model:String} AND status = 'serving' AND train_rows > 0 "
            "ORDER BY updated_at DESC LIMIT 1",
            parameters={"model": settings.model.name},
        ).result_rows
    except Exception as e:  # clickhouse-connect raises several unrelated types
        raise MonitoringError(
            f"could not read the serving version from model_versions: {e}; is ClickHouse up "
            "and migrated? (flywheel stack status, flywheel warehouse migrate)"
        ) from e
    if rows:
        version, start, end = rows[0]
        return Span(_utc(start), _utc(end), f"serving_version:{version}")
    monitoring = settings.monitoring
    end = now - timedelta(seconds=monitoring.current_window_s)
    return Span(end - timedelta(seconds=monitoring.reference_period_s), end, "configured_period")


def current_span(settings: FlywheelSettings, *, now: datetime) -> Span:
    return Span(now - timedelta(seconds=settings.monitoring.current_window_s), now, "sliding")


def read_window(client: Any, span: Span, *, limit_rows: int) -> WindowData:
    """Turns, answers, feedback and quarantine outcomes of one window, most recent first cut.

    Raises:
        MonitoringError: ClickHouse could not be queried.
    """
    bounds = {"start": span.start, "end": span.end, "limit": limit_rows}
    where = "ts >= {start:DateTime64(3)} AND ts < {end:DateTime64(3)}"
    data = WindowData()
    try:
        for text, tenant, topic, language, toxicity in _rows(
            client,
            "SELECT text, tenant, topic, language, toxicity FROM chat_turns FINAL "
            f"WHERE role = 'user' AND {where} ORDER BY ts DESC LIMIT {{limit:UInt32}}",
            bounds,
        ):
            data.user_texts.append(text)
            data.user_tenants.append(tenant)
            data.topics.append(topic or "unknown")
            data.languages.append(language or "unknown")
            data.lengths.append(float(len(text)))
            data.toxicity.append(float(toxicity))
        for text, version, toxicity in _rows(
            client,
            "SELECT text, model_version, toxicity FROM chat_turns FINAL "
            f"WHERE role = 'assistant' AND {where} ORDER BY ts DESC LIMIT {{limit:UInt32}}",
            bounds,
        ):
            texts, scores = data.answers.setdefault(version or "unknown", ([], []))
            texts.append(text)
            scores.append(float(toxicity))
        data.negative_feedback = [
            bool(row[0]) for row in _rows(
                client,
                f"SELECT negative FROM feedback FINAL WHERE {where} "
                "ORDER BY ts LIMIT {limit:UInt32}", bounds)
        ]
        data.quarantined = [
            bool(row[0]) for row in _rows(
                client,
                f"SELECT 0 AS q, ts AS at FROM chat_turns FINAL WHERE {where} UNION ALL "
                "SELECT 1 AS q, quarantined_at AS at FROM quarantine FINAL WHERE "
                "quarantined_at >= {start:DateTime64(3)} AND quarantined_at < {end:DateTime64(3)} "
                "ORDER BY at LIMIT {limit:UInt32}", bounds)
        ]
    except MonitoringError:
        raise
    except Exception as e:
        raise MonitoringError(
            f"could not read the window {span.start:%Y-%m-%d %H:%M} - {span.end:%H:%M} from "
            f"ClickHouse: {e}; check `flywheel stack status` and `flywheel warehouse migrate`"
        ) from e
    return data


def _rows(client: Any, query: str, parameters: dict[str, Any]) -> list[tuple[Any, ...]]:
    return list(client.query(query, parameters=parameters).result_rows)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
