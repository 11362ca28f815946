"""`ChatEvent`: one turn of a conversation, as a product backend reports it."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated
from uuid import UUID, uuid4

from pydantic import Field, field_validator, model_validator

from schemas.base import (
    MAX_METADATA_BYTES,
    Contract,
    EventTime,
    Identifier,
    Text,
    UserHash,
    lax_enum,
    utc_now,
)

MetadataValue = str | int | float | bool | None

# Built once: `json.dumps` with options builds a new encoder on every call.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


class Role(StrEnum):
    """Who spoke a turn."""

    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"


class ChatEvent(Contract):
    """One turn of a conversation. Keyed by `conversation_id` on Kafka, so turns stay in order."""

    event_id: UUID = Field(default_factory=uuid4)
    """Unique id of this event; replays of the same event carry the same id."""
    conversation_id: Identifier
    """The conversation the turn belongs to (the Kafka key)."""
    turn_index: Annotated[int, Field(ge=0, le=100_000)]
    """Position of the turn in its conversation, from 0."""
    role: Annotated[Role, lax_enum()]
    """`user`, `assistant` or `system`."""
    text: Text
    """What was said, at most 32,000 characters, without control characters."""
    model: Identifier | None = None
    """Name of the model that answered; required for assistant turns, absent otherwise."""
    model_version: Identifier | None = None
    """Served model version (adapter id) that answered; required for assistant turns."""
    latency_ms: Annotated[float, Field(ge=0, le=3_600_000)] | None = None
    """Time the model took to answer, for assistant turns."""
    prompt_tokens: Annotated[int, Field(ge=0)] | None = None
    """Tokens of the prompt the model saw, for assistant turns."""
    completion_tokens: Annotated[int, Field(ge=0)] | None = None
    """Tokens the model generated, for assistant turns."""
    timestamp: EventTime = Field(default_factory=utc_now)
    """When the turn happened; must carry a timezone, is stored in UTC
    and lies within 2000-01-01..2099-12-31 (`schemas.base.MIN_EVENT_TIME`, `MAX_EVENT_TIME`)."""
    tenant: Identifier
    """The product or customer the conversation belongs to."""
    user_id_hash: UserHash | None = None
    """HMAC-SHA-256 of the user id (see `schemas.hash_user_id`); never the raw id."""
    locale: Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")] | None = None
    """BCP 47 language tag reported by the client, e.g. `en-US`."""
    metadata: dict[Identifier, MetadataValue] = Field(default_factory=dict)
    """Free-form flat client metadata; at most 4 KiB as JSON."""

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata_is_flat(cls, value: object) -> object:
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(item, str | int | float | bool | type(None)):
                    raise ValueError(
                        f"value of {key!r} is a {type(item).__name__}; metadata is flat: "
                        "each value must be a string, number, boolean or null"
                    )
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata_fits(cls, value: dict[str, MetadataValue]) -> dict[str, MetadataValue]:
        if not value:
            return value  # most events carry none; `{}` is 2 bytes
        size_bytes = len(_COMPACT_JSON.encode(value).encode())
        if size_bytes > MAX_METADATA_BYTES:
            raise ValueError(
                f"is {size_bytes} bytes as JSON, over the {MAX_METADATA_BYTES}-byte cap; "
                "send less metadata or move large values elsewhere"
            )
        return value

    @model_validator(mode="after")
    def _assistant_fields(self) -> ChatEvent:
        answered = (self.model, self.model_version, self.latency_ms, self.completion_tokens)
        if self.role is Role.ASSISTANT:
            if self.model is None or self.model_version is None:
                raise ValueError(
                    "assistant turns need `model` and `model_version` (the adapter that answered)"
                )
        elif any(v is not None for v in answered):
            raise ValueError(
                f"{self.role.value} turns must not carry model, model_version, latency_ms or "
                "completion_tokens; only assistant turns are answered by a model"
            )
        return self
