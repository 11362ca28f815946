"""The one registry of Flywheel's Kafka topics, and the code that creates them.

Every topic Flywheel reads or writes is declared here once, with its key, partition
count, retention and cleanup policy. The broker does not auto-create topics
(`auto.create.topics.enable=false` on the local stack): `ensure_topics` creates them
from this registry, through `flywheel topics ensure` or at a service's start.

Chat and feedback events are both keyed by conversation id and have the same
partition count, so a conversation's chat and feedback land in partitions with the
same number and a stream processor can join them without a repartition.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # not re-exported
    AdminClient,
    ClusterMetadata,
    NewTopic,
)

from streams.errors import KafkaUnavailableError, TopicError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from deploy.settings import FlywheelSettings

logger = logging.getLogger(__name__)

CleanupPolicy = Literal["delete", "compact"]

_LEGAL_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_HOUR_MS = 3_600_000
_DAY_MS = 24 * _HOUR_MS

#: Partitions of every topic keyed by conversation id; equal so they stay co-partitioned.
CONVERSATION_PARTITIONS = 6


@dataclass(frozen=True)
class TopicSpec:
    """What one topic must look like on the broker."""

    name: str
    #: What the record key is, in words (e.g. "conversation id"); documentation for readers.
    key: str
    partitions: int
    #: How long records are kept; None keeps them forever (`retention.ms=-1`).
    retention_ms: int | None
    description: str
    cleanup_policy: CleanupPolicy = "delete"

    def __post_init__(self) -> None:
        if not _LEGAL_NAME.match(self.name) or self.name in {".", ".."}:
            raise ValueError(
                f"topic name {self.name!r} is not legal in Kafka: use 1 to 249 of "
                "letters, digits, '.', '_' and '-'"
            )
        if self.partitions < 1:
            raise ValueError(f"topic {self.name}: partitions must be at least 1")
        if self.retention_ms is not None and self.retention_ms <= 0:
            raise ValueError(
                f"topic {self.name}: retention_ms must be positive, or None to keep forever"
            )
        if self.cleanup_policy not in ("delete", "compact"):
            raise ValueError(f"topic {self.name}: cleanup_policy must be 'delete' or 'compact'")

    def config(self) -> dict[str, str]:
        """The topic-level Kafka configuration of this spec."""
        return {
            "cleanup.policy": self.cleanup_policy,
            "retention.ms": str(self.retention_ms if self.retention_ms is not None else -1),
        }


CHAT_EVENTS = TopicSpec(
    name="flywheel.chat.events",
    key="conversation id",
    partitions=CONVERSATION_PARTITIONS,
    retention_ms=7 * _DAY_MS,
    description="Chat turns (prompt, response, latency, model version) from the serving layer.",
)
FEEDBACK_EVENTS = TopicSpec(
    name="flywheel.feedback.events",
    key="conversation id",
    partitions=CONVERSATION_PARTITIONS,
    retention_ms=7 * _DAY_MS,
    description="User feedback (ratings, corrections) on chat turns.",
)
QUARANTINE = TopicSpec(
    name="flywheel.quarantine",
    key="the original record's key, as received",
    partitions=1,
    retention_ms=3 * _DAY_MS,
    description="Records that failed validation: original bytes plus a reason code.",
)
CURATED_TURNS = TopicSpec(
    name="flywheel.curated.turns",
    key="conversation id",
    partitions=CONVERSATION_PARTITIONS,
    retention_ms=7 * _DAY_MS,
    description="Chat turns joined with their feedback that passed the quality filters.",
)
TRAINING_EXAMPLES = TopicSpec(
    name="flywheel.training.examples",
    key="training example id",
    partitions=3,
    retention_ms=14 * _DAY_MS,
    description="Prompt/response pairs ready for the LoRA trainer.",
)
ERRORS = TopicSpec(
    name="flywheel.errors",
    key="the component that failed",
    partitions=1,
    retention_ms=7 * _DAY_MS,
    description="Failures of Flywheel's own processing (not bad input: that is quarantined).",
)
MODELS_PUBLISHED = TopicSpec(
    name="flywheel.models.published",
    key="model name",
    partitions=1,
    retention_ms=None,
    cleanup_policy="compact",
    description="The latest published version of each model; compacted to one record per model.",
)
ALERTS = TopicSpec(
    name="flywheel.alerts",
    key="alert name",
    partitions=1,
    retention_ms=7 * _DAY_MS,
    description="Alerts on drift, quality and latency, as Alertmanager sent them.",
)

#: Every topic of Flywheel, in pipeline order.
REGISTRY: tuple[TopicSpec, ...] = (
    CHAT_EVENTS,
    FEEDBACK_EVENTS,
    QUARANTINE,
    CURATED_TURNS,
    TRAINING_EXAMPLES,
    ERRORS,
    MODELS_PUBLISHED,
    ALERTS,
)


def by_name(name: str) -> TopicSpec:
    """The registered spec of a topic.

    Raises:
        KeyError: the topic is not in the registry.
    """
    for spec in REGISTRY:
        if spec.name == name:
            return spec
    raise KeyError(f"{name} is not a registered topic; see streams/topics.py")


@dataclass(frozen=True)
class TopicState:
    """A registered topic as the broker has it."""

    spec: TopicSpec
    #: Partitions on the broker; None when the topic does not exist there.
    partitions: int | None
    #: True when the last `ensure_topics` call created it.
    created: bool = False

    @property
    def exists(self) -> bool:
        return self.partitions is not None


def describe_topics(
    settings: FlywheelSettings,
    specs: Sequence[TopicSpec] = REGISTRY,
    *,
    timeout_s: float = 10.0,
) -> list[TopicState]:
    """Which registered topics exist on the broker, with their partition counts.

    Raises:
        KafkaUnavailableError: the broker did not answer within `timeout_s`.
    """
    metadata = _metadata(_admin(settings), settings, timeout_s=timeout_s)
    return [TopicState(spec, _partitions(metadata, spec.name)) for spec in specs]


def ensure_topics(
    settings: FlywheelSettings,
    specs: Sequence[TopicSpec] = REGISTRY,
    *,
    timeout_s: float = 30.0,
) -> list[TopicState]:
    """Create the topics that are missing; leave existing ones alone.

    Returns one state per spec, with `created` telling which this call created. It
    returns once every created topic is visible in the broker's metadata, so callers
    can produce to it right away.

    Raises:
        KafkaUnavailableError: the broker did not answer within `timeout_s`.
        TopicError: an existing topic has fewer partitions than its spec asks, or the
            broker refused to create one (with Kafka's error code).
    """
    admin = _admin(settings)
    metadata = _metadata(admin, settings, timeout_s=timeout_s)
    for spec in specs:
        actual = _partitions(metadata, spec.name)
        if actual is not None and actual < spec.partitions:
            raise TopicError(
                f"topic {spec.name} has {actual} partitions but the registry asks for "
                f"{spec.partitions}. Add partitions with kafka-topics --alter "
                f"--partitions {spec.partitions} (keyed records of existing keys move), "
                "or delete the topic on a development broker and run `flywheel topics ensure`.",
                topic=spec.name,
            )
    missing = [spec for spec in specs if _partitions(metadata, spec.name) is None]
    created = _create(admin, settings, missing, timeout_s=timeout_s)
    if created:
        _wait_visible(admin, settings, created, timeout_s=timeout_s)
    states = [
        TopicState(
            spec,
            _partitions(metadata, spec.name) or spec.partitions,
            created=spec.name in created,
        )
        for spec in specs
    ]
    logger.info("topics ensured: created=%s existed=%s", sorted(created),
                [s.spec.name for s in states if not s.created])
    return states


def _admin(settings: FlywheelSettings) -> AdminClient:
    # librdkafka logs connection failures to stderr by itself; send them to logging,
    # the caller gets a KafkaUnavailableError that says what to do.
    return AdminClient(settings.kafka.client_config(), logger=logger)


def _unreachable(settings: FlywheelSettings, detail: str) -> str:
    return (
        f"Kafka at {settings.kafka.bootstrap} did not answer ({detail}). Start the local "
        "stack with `flywheel stack up`, or point FLYWHEEL_KAFKA__BOOTSTRAP_SERVERS at a "
        "reachable cluster."
    )


def _metadata(
    admin: AdminClient, settings: FlywheelSettings, *, timeout_s: float
) -> ClusterMetadata:
    try:
        return admin.list_topics(timeout=timeout_s)
    except KafkaException as e:
        error: KafkaError = e.args[0]
        raise KafkaUnavailableError(
            _unreachable(settings, error.str()), code=error.code()
        ) from e


def _partitions(metadata: ClusterMetadata, name: str) -> int | None:
    topic = metadata.topics.get(name)
    if topic is None or topic.error is not None:
        return None
    return len(topic.partitions)


def _create(
    admin: AdminClient,
    settings: FlywheelSettings,
    specs: Sequence[TopicSpec],
    *,
    timeout_s: float,
) -> set[str]:
    if not specs:
        return set()
    new_topics = [
        NewTopic(
            spec.name,
            num_partitions=spec.partitions,
            replication_factor=settings.kafka.replication_factor,
            config=spec.config(),
        )
        for spec in specs
    ]
    futures = admin.create_topics(
        new_topics, operation_timeout=timeout_s, request_timeout=timeout_s
    )
    created: set[str] = set()
    for name, future in futures.items():
        try:
            future.result()
        except KafkaException as e:
            error: KafkaError = e.args[0]
            if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                # Another process created it between our metadata read and now.
                continue
            raise _create_error(settings, name, error) from e
        created.add(name)
        logger.info("created topic %s", name)
    return created


def _create_error(
    settings: FlywheelSettings, name: str, error: KafkaError
) -> KafkaUnavailableError | TopicError:
    code = error.code()
    if code in (KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError.REQUEST_TIMED_OUT):
        return KafkaUnavailableError(_unreachable(settings, error.str()), code=code)
    hint = ""
    if code == KafkaError.INVALID_REPLICATION_FACTOR:
        hint = (
            f" The cluster has fewer brokers than kafka.replication_factor="
            f"{settings.kafka.replication_factor}; lower FLYWHEEL_KAFKA__REPLICATION_FACTOR."
        )
    return TopicError(
        f"Kafka refused to create topic {name}: {error.str()} ({error.name()}).{hint}",
        topic=name,
        code=code,
    )



def _wait_visible(
    admin: AdminClient, settings: FlywheelSettings, names: set[str], *, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    pending = set(names)
    while pending:
        metadata = _metadata(admin, settings, timeout_s=max(1.0, deadline - time.monotonic()))
        pending = {
            name
            for name in pending
            if _partitions(metadata, name) is None
            or any(p.leader < 0 for p in metadata.topics[name].partitions.values())
        }
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    if pending:
        logger.warning("created topics not yet visible after %.0f s: %s", timeout_s,
                       sorted(pending))
