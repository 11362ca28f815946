"""Events Flywheel itself emits: quarantined records, published models and alerts."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID, uuid4

from pydantic import Field, model_validator

from schemas.base import Contract, Identifier, UtcDatetime, lax_enum, utc_now

#: Largest original payload a quarantine event may hold (the contract's bound, kept for
#: records written before `QUARANTINE_KEPT_BYTES`).
MAX_QUARANTINE_BYTES = 1_048_576
#: Most original bytes a producer keeps. Base64 makes them 4/3 as long, and the whole
#: message must stay under Kafka's 1 MB `message.max.bytes`: 512 KiB is about 700 KB on
#: the wire. A longer original keeps this excerpt, its full size and its SHA-256.
QUARANTINE_KEPT_BYTES = 512 * 1024


class ReasonCode(StrEnum):
    """Why a record was quarantined. Stable codes: analysts group by them."""

    NOT_JSON = "not_json"
    NOT_UTF8 = "not_utf8"
    SCHEMA_VIOLATION = "schema_violation"
    UNKNOWN_SCHEMA = "unknown_schema"
    TOO_LONG = "too_long"
    EMPTY = "empty"
    TOXIC = "toxic"
    IDENTITY_ATTACK = "identity_attack"
    BIASED = "biased"
    DUPLICATE = "duplicate"
    NEAR_DUPLICATE = "near_duplicate"
    PRIVATE_DATA = "private_data"
    OVER_CAP = "over_cap"
    ORPHAN_FEEDBACK = "orphan_feedback"
    LANGUAGE = "language"
    UNSTORABLE = "unstorable"
    """The record was valid, but its table refused its row (see `streams.sink`)."""


class QuarantinedRecord(Contract):
    """A record kept out of training, with why and where the original is."""

    record_id: UUID = Field(default_factory=uuid4)
    """Unique id of this quarantine decision."""
    original: Annotated[bytes, Field(max_length=MAX_QUARANTINE_BYTES)]
    """The original record bytes (base64 in JSON); only ever written to the quarantine topic."""
    original_truncated: bool = False
    """True when the original was cut to its first `QUARANTINE_KEPT_BYTES`."""
    original_size_bytes: Annotated[int, Field(ge=0)] | None = None
    """Size of the whole original, kept or not (None on records from before it was added)."""
    original_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    """SHA-256 of the whole original, so a cut one can still be matched to its source."""
    topic: str = Field(min_length=1, max_length=249)
    """Kafka topic the original was read from."""
    partition: Annotated[int, Field(ge=0)] | None = None
    """Partition of the original; None when it was rejected at the HTTP ingest (then `topic`
    names the route, e.g. `ingest:/v1/events/chat`) and never reached Kafka."""
    offset: Annotated[int, Field(ge=0)] | None = None
    """Offset of the original in its partition; None as for `partition`."""
    reasons: list[Annotated[ReasonCode, lax_enum()]] = Field(min_length=1)
    """Every reason that applied, most important first."""
    scores: dict[Identifier, float] = Field(default_factory=dict)
    """Scores behind the decision, e.g. `toxicity: 0.93`."""
    detail: Annotated[str, Field(max_length=4_000)] = ""
    """Human-readable explanation (validation errors, thresholds crossed)."""
    event_id: UUID | None = None
    """`event_id` of the original when it could be parsed."""
    tenant: Identifier | None = None
    """Tenant of the original when it could be parsed."""
    quarantined_at: UtcDatetime = Field(default_factory=utc_now)
    """When the decision was made."""


class DatasetSnapshot(Contract):
    """What a model was trained on, so the run can be reproduced."""

    window_start: UtcDatetime
    """Inclusive start of the training window."""
    window_end: UtcDatetime
    """Exclusive end of the training window."""
    query: str = Field(min_length=1)
    """The ClickHouse query that selected the rows."""
    train_rows: Annotated[int, Field(ge=0)]
    """Rows in the training split."""
    validation_rows: Annotated[int, Field(ge=0)]
    """Rows in the validation split."""
    content_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    """SHA-256 over the selected rows, in order."""
    kafka_offsets: dict[str, dict[int, tuple[int, int]]] = Field(default_factory=dict)
    """Lineage: topic -> partition -> [first, last] offset of the records used."""

    @model_validator(mode="after")
    def _window_is_ordered(self) -> DatasetSnapshot:
        if self.window_end <= self.window_start:
            raise ValueError("window_end must be after window_start")
        return self


class ModelPublished(Contract):
    """A trained adapter passed the evaluation gate and may be served."""

    model: Identifier
    """Served model name (Triton model name); the Kafka key, on a compacted topic."""
    version: Annotated[int, Field(ge=1)]
    """Triton version number of this adapter."""
    adapter_id: Identifier
    """Stable id of the adapter (reported as `model_version` on chat events)."""
    base_model: str = Field(min_length=1, max_length=512)
    """Path or name of the base model the adapter applies to."""
    adapter_uri: str = Field(min_length=1, max_length=2_048)
    """Where the adapter's files are (a path or an object-store URI)."""
    adapter_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    """Hash of the adapter weights, checked before loading."""
    previous_version: Annotated[int, Field(ge=1)] | None = None
    """The version served when this one was published."""
    dataset: DatasetSnapshot
    """The data the adapter was trained on."""
    metrics: dict[Identifier, float] = Field(default_factory=dict)
    """Evaluation results, e.g. `perplexity_new`, `bleu`."""
    published_at: UtcDatetime = Field(default_factory=utc_now)
    """When the gate passed."""


class Severity(StrEnum):
    """How urgently an alert needs a person."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Alert(Contract):
    """A monitoring alert as on-call engineers see it (one Alertmanager notification)."""

    alert_id: UUID = Field(default_factory=uuid4)
    """Unique id of this notification."""
    name: Identifier
    """Alert rule name, e.g. `FlywheelEmbeddingDrift`."""
    status: Literal["firing", "resolved"]
    """Whether the condition holds now."""
    severity: Annotated[Severity, lax_enum()]
    """`info`, `warning` or `critical`."""
    summary: str = Field(min_length=1, max_length=1_000)
    """One line: what is wrong and how bad."""
    description: Annotated[str, Field(max_length=10_000)] = ""
    """Details: since when, which model or tenant, what to do first."""
    runbook_url: Annotated[str, Field(max_length=2_048)] | None = None
    """Where the runbook for this alert is."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Alert labels (model, version, tenant...)."""
    fingerprint: Annotated[str, Field(max_length=128)] = ""
    """Alertmanager's fingerprint; the same for every notification of one alert."""
    starts_at: UtcDatetime = Field(default_factory=utc_now)
    """When the condition began."""
    ends_at: UtcDatetime | None = None
    """When it resolved, for resolved alerts."""
