"""Publish an adapter: a new version in the Triton model repository, a model_versions row,
and `ModelPublished` on Kafka for the inference side to hot-swap.

The repository write is atomic (`inference.repository.write_version` assembles the folder
under a temporary name and renames it into place), so a crash at any point leaves either
no new version or a complete one. A crash after the write but before the row or the event
leaves a complete, unannounced version: the next publish takes the following number, and
`versions()` still lists it for an operator to announce or remove.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.platform import DatasetSnapshot, ModelPublished
from trainer.errors import PublishError

if TYPE_CHECKING:
    from deploy.settings import FlywheelSettings

logger = logging.getLogger(__name__)

PRODUCER_NAME = "flywheel-trainer"


@dataclass(frozen=True)
class Served:
    """The version serving now, as the model_versions table records it."""

    version: int
    adapter_dir: Path | None


def served_version(client: Any, settings: FlywheelSettings) -> Served | None:
    """The version Triton serves now, as the inference controller records it.

    The controller marks the version it switched to `serving` in model_versions (see
    `inference.serving_status`); the newest such row wins. None when no version is
    recorded as serving, which means the bare base (nothing was ever deployed).
    """
    rows = client.query(
        f"SELECT version, adapter_uri FROM {settings.clickhouse.database}.model_versions FINAL "
        "WHERE model = {model:String} AND status = 'serving' ORDER BY updated_at DESC LIMIT 1",
        parameters={"model": settings.model.name},
    ).result_rows
    if not rows:
        return None
    version, uri = rows[0]
    return Served(int(version), Path(uri) if uri else None)


def prepare_repository(settings: FlywheelSettings) -> Path:
    """The model folder, created with version 1 (the bare base) when missing.

    Raises:
        PublishError: the repository cannot be prepared.
    """
    from inference.errors import RepositoryError
    from inference.repository import ensure_model

    repo = settings.triton_model_repository()
    try:
        return ensure_model(repo, settings.model.name, base_model=settings.base_model_path())
    except RepositoryError as e:
        raise PublishError(f"cannot prepare the model repository {repo}: {e}") from e


def write_adapter_version(
    settings: FlywheelSettings, adapter_dir: Path, *, metadata: dict[str, Any]
) -> tuple[int, Path, str]:
    """Write the adapter as the next version; returns (version, folder, weights sha256).

    Raises:
        PublishError: the repository refused the write (the message says why).
    """
    from inference.errors import RepositoryError
    from inference.repository import (
        ADAPTER_DIR,
        adapter_sha256,
        next_version,
        write_version,
    )

    repo = settings.triton_model_repository()
    model = settings.model.name
    try:
        digest = adapter_sha256(adapter_dir)
        version = next_version(repo, model)
        folder = write_version(repo, model, version, adapter_dir=adapter_dir,
                               metadata={**metadata, "adapter_sha256": digest})
    except RepositoryError as e:
        raise PublishError(f"could not write the adapter into {repo}: {e}") from e
    return version, folder / ADAPTER_DIR, digest


def publish(
    client: Any, settings: FlywheelSettings, *, adapter_dir: Path, snapshot: DatasetSnapshot,
    metrics: dict[str, float], previous_version: int | None,
) -> ModelPublished:
    """Write, record and announce a new version of the served model.

    Raises:
        PublishError: the repository write, the model_versions insert or the Kafka
            delivery failed; the message says which and what to check.
    """
    prepare_repository(settings)
    model = settings.model.name
    base = str(settings.base_model_path().resolve())
    version, stored, digest = write_adapter_version(settings, adapter_dir, metadata={
        "base_model": base, "dataset": json.loads(snapshot.model_dump_json()),
        "metrics": metrics, "previous_version": previous_version,
    })
    event = ModelPublished(
        model=model, version=version, adapter_id=f"{model}-v{version}", base_model=base,
        adapter_uri=str(stored), adapter_sha256=digest, previous_version=previous_version,
        dataset=snapshot, metrics=metrics,
    )
    try:
        record_version(client, settings, event)
    except Exception as e:
        raise PublishError(
            f"version {version} is written to the repository but could not be recorded in "
            f"model_versions ({e}); check ClickHouse (`flywheel stack status`) and rerun"
        ) from e
    announce(settings, event)
    logger.info("published %s version %d (%s)", model, version, digest[:12])
    return event


def record_version(client: Any, settings: FlywheelSettings, event: ModelPublished) -> None:
    """Insert the version into model_versions with status `published`."""
    d = event.dataset
    client.insert(
        f"{settings.clickhouse.database}.model_versions",
        [[event.model, event.version, event.adapter_id, event.base_model, event.adapter_uri,
          event.adapter_sha256, event.previous_version, d.window_start, d.window_end,
          d.train_rows, d.validation_rows, d.content_sha256, d.query,
          json.dumps({t: {str(p): list(r) for p, r in parts.items()}
                      for t, parts in d.kafka_offsets.items()}),
          event.metrics, "published", event.published_at, datetime.now(UTC)]],
        column_names=["model", "version", "adapter_id", "base_model", "adapter_uri",
                      "adapter_sha256", "previous_version", "window_start", "window_end",
                      "train_rows", "validation_rows", "content_sha256", "dataset_query",
                      "kafka_offsets", "metrics", "status", "published_at", "updated_at"],
    )


def announce(settings: FlywheelSettings, event: ModelPublished, *, timeout_s: float = 30.0
             ) -> None:
    """Send `ModelPublished` keyed by model name and wait for the broker's acknowledgement.

    Raises:
        PublishError: Kafka did not acknowledge it in time.
    """
    from confluent_kafka import Producer

    from schemas.envelope import encode
    from streams.topics import MODELS_PUBLISHED

    errors: list[Any] = []
    producer = Producer({**settings.kafka.client_config(), "client.id": PRODUCER_NAME,
                         "enable.idempotence": True, "acks": "all",
                         "delivery.timeout.ms": int(timeout_s * 1000)})
    producer.produce(MODELS_PUBLISHED.name, key=event.model.encode(),
                     value=encode(event, producer=PRODUCER_NAME),
                     on_delivery=lambda err, _msg: errors.append(err) if err else None)
    remaining = producer.flush(timeout_s + 5)
    if remaining or errors:
        raise PublishError(
            f"version {event.version} is written and recorded, but ModelPublished was not "
            f"delivered to {MODELS_PUBLISHED.name} ({errors[0] if errors else 'timed out'}); "
            "check Kafka (`flywheel stack status`); the inference side also finds the "
            "version in the repository and in model_versions"
        )
