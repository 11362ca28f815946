"""Whole runs against the real ClickHouse and Kafka: topic shift, publish, sabotage."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings
from tests.trainer.conftest import fast_trainer
from tests.trainer.synthetic import TURN_COLUMNS, billing_pairs, turn_rows
from trainer.pipeline import RunReport, run_window

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START = datetime(2032, 3, 1, 9, tzinfo=UTC)
END = START + timedelta(hours=1)
#: The stated margin: the adapter cuts held-out perplexity on the new topic by at least 40%.
MARGIN = 0.40


@pytest.fixture(scope="module")
def scenario(
    running: Callable[..., Supervisor], settings: FlywheelSettings, tiny_base: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Any, FlywheelSettings]]:
    """A warehouse holding one window of billing conversations (a topic the base never saw)."""
    from deploy.clickhouse.client import get_client
    from deploy.warehouse import migrate
    from streams.topics import ensure_topics

    running("clickhouse", "kafka")
    ensure_topics(settings)
    tmp = tmp_path_factory.mktemp("pipeline")
    name = f"t_pipeline_{tmp.name[-6:].replace('-', '_')}"
    isolated = settings.model_copy(update={
        "model": settings.model.model_copy(
            update={"name": name.replace("_", "-"), "base_model_path": tiny_base}),
        "trainer": fast_trainer(runs_dir=tmp / "runs", regression_tolerance=0.5,
                                base_regression_tolerance=0.5),
        "triton": settings.triton.model_copy(update={"model_repository": tmp / "models"}),
        "clickhouse": settings.clickhouse.model_copy(update={"database": name}),
    })
    admin = get_client(isolated, database="default")
    migrate(admin, isolated)
    client = get_client(isolated)
    rows, answers = turn_rows(billing_pairs(240, seed=7), start=START, topic="billing")
    client.insert(f"{name}.chat_turns", rows, column_names=TURN_COLUMNS)
    try:
        yield client, isolated
    finally:
        client.close()
        admin.command(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


@pytest.fixture(scope="module")
def first_run(scenario: tuple[Any, FlywheelSettings]) -> RunReport:
    client, settings = scenario
    return run_window(client, settings, START, END)


def test_on_a_topic_shifted_window_the_adapter_lowers_held_out_perplexity_by_the_margin(
    first_run: RunReport,
) -> None:
    assert first_run.served_version is None  # compared with the bare base
    assert first_run.candidate.perplexity_new <= (1 - MARGIN) * first_run.served.perplexity_new
    assert first_run.verdict.passed, first_run.verdict.reason


def test_a_passing_adapter_is_written_recorded_and_announced(
    first_run: RunReport, scenario: tuple[Any, FlywheelSettings],
) -> None:
    from confluent_kafka import Consumer, TopicPartition

    from inference.repository import read_metadata, versions
    from streams.topics import MODELS_PUBLISHED

    client, settings = scenario
    event = first_run.published
    assert event is not None and event.version == 2
    repo, model = settings.triton_model_repository(), settings.model.name
    assert versions(repo, model) == [1, 2]
    assert read_metadata(repo, model, 2)["adapter_sha256"] == event.adapter_sha256
    row = client.query(
        f"SELECT version, status, toString(content_sha256) FROM {settings.clickhouse.database}"
        ".model_versions FINAL").result_rows
    assert row == [(2, "published", first_run.window.snapshot.content_sha256)]
    consumer = Consumer({**settings.kafka.client_config(), "group.id": model,
                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(MODELS_PUBLISHED.name, 0, 0)])
        found = []
        for _ in range(50):
            message = consumer.poll(0.5)
            if message is None:
                if found:
                    break
                continue
            if message.error() is None and message.key() == model.encode():
                found.append(json.loads(message.value())["payload"])
        assert [p["version"] for p in found] == [2]
    finally:
        consumer.close()


def test_the_gate_rejects_a_sabotaged_adapter_and_the_served_version_stays(
    first_run: RunReport, scenario: tuple[Any, FlywheelSettings],
) -> None:
    from inference.repository import versions
    from inference.serving_status import ServingStatusWriter

    client, settings = scenario
    assert first_run.published is not None
    # What the inference controller records once it has swapped to version 2.
    ServingStatusWriter(settings, model=settings.model.name,
                        repo=settings.triton_model_repository()).record_switch(
        serving=2, replaced=1, reason="publish")
    sabotaged = run_window(client, settings, START, END, shuffle_targets=True)

    assert sabotaged.served_version == 2
    assert not sabotaged.verdict.passed
    assert "not better on new data" in sabotaged.verdict.reason
    assert sabotaged.published is None
    assert versions(settings.triton_model_repository(), settings.model.name) == [1, 2]
    db = settings.clickhouse.database
    served = client.query(f"SELECT max(version) FROM {db}.model_versions FINAL "
                          "WHERE status = 'serving'").result_rows[0][0]
    assert served == 2
    evaluations = client.query(
        f"SELECT passed, reason FROM {db}.evaluations ORDER BY evaluated_at").result_rows
    assert [passed for passed, _ in evaluations] == [True, False]
    assert all(reason for _, reason in evaluations)
    # Both runs bounded forgetting against the bare base: the first had it as the served
    # model, the second measured it apart from version 2 (same weights, same data).
    bases = [row[0] for row in client.query(
        f"SELECT metrics['base_perplexity_regression'] FROM {db}.evaluations "
        "ORDER BY evaluated_at").result_rows]
    assert bases[0] == pytest.approx(first_run.served.perplexity_regression)
    assert bases[1] == pytest.approx(bases[0], rel=1e-4)
