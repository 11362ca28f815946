"""Alertmanager payloads become Alerts; automatic actions obey their settings and are recorded."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import generate_latest

from deploy.settings import FlywheelSettings, MonitoringSettings
from monitoring.actions import ActionDispatcher, ActionRecord, announcement
from monitoring.alertmanager import parse_matchers
from monitoring.alerts import alerts_from_webhook, parse_time
from monitoring.drift import DriftResult
from monitoring.errors import AlertmanagerError, ReceiverError
from monitoring.exporter import DriftExporter
from schemas.platform import Alert, Severity


def webhook(status: str, *, name: str = "FlywheelModelLatencyHigh", version: str = "3",
            ends_at: str = "0001-01-01T00:00:00Z") -> dict[str, Any]:
    return {
        "version": "4", "status": status, "receiver": "flywheel-webhook", "groupKey": "{}",
        "alerts": [{
            "status": status,
            "labels": {"alertname": name, "severity": "critical", "model": "flywheel-chat",
                       "version": version},
            "annotations": {"summary": "p99 is 3.5 s", "description": "slow",
                            "runbook_url": f"docs/runbooks/{name}.md"},
            "startsAt": "2026-11-26T05:16:45.229975921Z", "endsAt": ends_at,
            "generatorURL": "http://prometheus/graph", "fingerprint": "6b97116f42abdb21",
        }],
    }


def test_a_firing_webhook_entry_becomes_an_alert_with_labels_runbook_and_start_time() -> None:
    [alert] = alerts_from_webhook(webhook("firing"))
    assert alert.name == "FlywheelModelLatencyHigh"
    assert alert.status == "firing"
    assert alert.severity == Severity.CRITICAL
    assert alert.runbook_url == "docs/runbooks/FlywheelModelLatencyHigh.md"
    assert alert.labels["version"] == "3"
    assert alert.starts_at == datetime(2026, 11, 26, 5, 16, 45, 229975, tzinfo=UTC)
    assert alert.ends_at is None


def test_a_resolved_entry_keeps_its_end_time() -> None:
    [alert] = alerts_from_webhook(webhook("resolved", ends_at="2026-11-26T05:30:00Z"))
    assert alert.status == "resolved"
    assert alert.ends_at == parse_time("2026-11-26T05:30:00Z")


@pytest.mark.parametrize("body", [{}, {"alerts": "nope"}, {"alerts": [{"labels": {}}]}])
def test_a_body_that_is_not_an_alertmanager_payload_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ReceiverError):
        alerts_from_webhook(body)


def test_silence_matchers_are_parsed_and_a_malformed_one_says_how_to_write_it() -> None:
    assert parse_matchers(["alertname=X", "model = m"]) == {"alertname": "X", "model": "m"}
    with pytest.raises(AlertmanagerError, match="label=value"):
        parse_matchers(["alertname"])


def settings_with(**monitoring: Any) -> FlywheelSettings:
    return FlywheelSettings(monitoring=MonitoringSettings(**monitoring))


class Calls:
    def __init__(self) -> None:
        self.rollbacks: list[tuple[str, int]] = []
        self.retrains: list[tuple[str, str]] = []
        self.records: list[ActionRecord] = []


def dispatcher(settings: FlywheelSettings, calls: Calls, *, promoted_ago_s: float | None
               ) -> ActionDispatcher:
    def promoted_at(_model: str, _version: int) -> datetime | None:
        if promoted_ago_s is None:
            return None
        return datetime.now(UTC) - timedelta(seconds=promoted_ago_s)

    return ActionDispatcher(
        settings, retrain=lambda m, r: calls.retrains.append((m, r)),
        rollback=lambda m, v: calls.rollbacks.append((m, v)), promoted_at=promoted_at,
        record=calls.records.append)


def test_a_latency_alert_on_a_freshly_promoted_version_rolls_it_back_when_enabled() -> None:
    calls = Calls()
    actions = dispatcher(settings_with(auto_rollback=True), calls, promoted_ago_s=60)

    [record] = actions.handle(alerts_from_webhook(webhook("firing")))

    assert calls.rollbacks == [("flywheel-chat", 3)]
    assert record.performed and record.action == "rollback"
    assert calls.records == [record]
    # The same alert notified again (repeat_interval) does not roll back twice.
    assert actions.handle(alerts_from_webhook(webhook("firing"))) == []


def test_rollback_is_recorded_but_not_done_when_the_setting_is_off() -> None:
    calls = Calls()
    [record] = dispatcher(settings_with(auto_rollback=False), calls, promoted_ago_s=60).handle(
        alerts_from_webhook(webhook("firing")))
    assert calls.rollbacks == []
    assert not record.performed
    assert "auto_rollback is off" in record.reason


def test_an_old_version_is_not_rolled_back_automatically() -> None:
    calls = Calls()
    [record] = dispatcher(settings_with(auto_rollback=True), calls,
                          promoted_ago_s=7200).handle(alerts_from_webhook(webhook("firing")))
    assert calls.rollbacks == [] and not record.performed
    assert "was not promoted in the last" in record.reason


def test_a_drift_alert_asks_for_a_retrain_when_enabled_and_resolved_alerts_do_nothing() -> None:
    calls = Calls()
    actions = dispatcher(settings_with(auto_retrain_on_drift=True), calls, promoted_ago_s=None)
    assert actions.handle(alerts_from_webhook(webhook("resolved",
                                                      name="FlywheelEmbeddingDrift"))) == []
    [record] = actions.handle(alerts_from_webhook(webhook("firing",
                                                          name="FlywheelEmbeddingDrift")))
    assert record.action == "retrain" and record.performed
    assert calls.retrains[0][0] == "flywheel-chat"


def test_every_action_is_announced_as_an_info_alert() -> None:
    calls = Calls()
    [record] = dispatcher(settings_with(auto_rollback=True), calls, promoted_ago_s=1).handle(
        alerts_from_webhook(webhook("firing")))
    message = announcement(record)
    assert isinstance(message, Alert)
    assert message.severity == Severity.INFO
    assert message.summary.startswith("automatic rollback performed for flywheel-chat version 3")


def test_exporter_publishes_statistic_and_threshold_and_nan_for_insufficient_data() -> None:
    exporter = DriftExporter()
    exporter.set_latency_thresholds(settings_with(latency_p99_thresholds_s={"slow-model": 0.5}))
    ok = DriftResult("topic_psi", 0.05, 0.2, "ok", 100, 100, labels={"tenant": "all",
                                                                       "model_version": "all"})
    empty = DriftResult.insufficient("embedding_mmd", threshold=math.nan, n_reference=0,
                                     n_current=3, minimum=50,
                                     labels={"tenant": "all", "model_version": "all"})
    exporter.publish([ok, empty], finished_at_s=1.0)
    text = generate_latest(exporter.registry).decode()

    assert 'flywheel_drift_statistic{detector="topic_psi",model_version="all",tenant="all"} 0.05' \
        in text
    assert 'flywheel_drift_threshold{detector="topic_psi",model_version="all",tenant="all"} 0.2' \
        in text
    assert ('flywheel_drift_statistic{detector="embedding_mmd",model_version="all",'
            'tenant="all"} NaN') in text
    assert ('flywheel_drift_insufficient_data{detector="embedding_mmd",model_version="all",'
            'tenant="all"} 1.0') in text
    assert 'flywheel_latency_p99_threshold_seconds{model="slow-model"} 0.5' in text
    assert 'flywheel_latency_p99_threshold_seconds{model="flywheel-chat"} 2.0' in text

    exporter.publish([ok], finished_at_s=2.0)
    assert "embedding_mmd" not in generate_latest(exporter.registry).decode()


@pytest.mark.parametrize("name", ["FlywheelModelOutputDrift", "FlywheelFeedbackRateChange"])
def test_output_drift_and_rate_changes_never_trigger_a_retrain(name: str) -> None:
    calls = Calls()
    actions = dispatcher(settings_with(auto_retrain_on_drift=True), calls, promoted_ago_s=None)
    assert actions.handle(alerts_from_webhook(webhook("firing", name=name))) == []
    assert calls.retrains == []
