"""Request and response bodies of the gateway (the OpenAI chat-completions subset)."""

from __future__ import annotations

import json
import re
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from inference.gateway.text import first_refused_character
from schemas.base import ID_PATTERN, MAX_METADATA_BYTES, Identifier
from schemas.feedback import FeedbackKind, FlagReason

#: OpenAI caps tag keys at 64 characters; the characters are those of a ChatEvent key.
_METADATA_KEY_MAX_CHARS = 64
_METADATA_KEY = re.compile(ID_PATTERN)
#: A stop string longer than this is no stop sequence, only work for every generated token.
_STOP_MAX_CHARS = 256
#: The chat event's metadata cap, less room for what the gateway adds (`triton_version`).
_METADATA_MAX_BYTES = MAX_METADATA_BYTES - 512


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=32_000)


class ChatRequest(BaseModel):
    """`POST /v1/chat/completions`; unknown OpenAI fields are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[Message] = Field(min_length=1, max_length=200)
    max_tokens: int | None = Field(default=None, ge=1, le=1024)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1024)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    user: str | None = Field(default=None, max_length=256)
    conversation_id: Identifier | None = Field(
        default=None,
        description="Flywheel extension: the conversation the turn belongs to (else new); "
        "an identifier as on ChatEvent (1-128 letters, digits or ._:@/+-, starting with a "
        "letter or digit).",
    )
    metadata: dict[str, str] = Field(
        default_factory=dict, max_length=16,
        description="OpenAI's tags (16 at most, values up to 512 characters), kept on both "
        "chat events; `topic` is what the streams balance and analysts group by.",
    )

    @field_validator("metadata")
    @classmethod
    def _metadata_fits_the_chat_event(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if len(key) > _METADATA_KEY_MAX_CHARS or not _METADATA_KEY.fullmatch(key):
                raise ValueError(f"metadata key {key!r} must be 1-64 letters, digits or "
                                 "._:@/+-, starting with a letter or digit")
            if len(item) > 512:
                raise ValueError(f"metadata[{key!r}] is {len(item)} characters; at most 512")
            refused = first_refused_character(item)
            if refused:
                raise ValueError(f"metadata[{key!r}] has a {refused}")
        size_bytes = len(json.dumps(value, ensure_ascii=False).encode())
        if size_bytes > _METADATA_MAX_BYTES:
            raise ValueError(f"metadata is {size_bytes} bytes as JSON; at most "
                             f"{_METADATA_MAX_BYTES}")
        return value

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, value: list[Message]) -> list[Message]:
        if value[-1].role != "user":
            raise ValueError("the last message must have role `user`")
        if not value[-1].content.strip():
            raise ValueError("the last user message is empty")
        refused = first_refused_character(value[-1].content)
        if refused:
            raise ValueError(f"the last user message has a {refused}")
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > 4 or any(not s or len(s) > _STOP_MAX_CHARS for s in stops):
            raise ValueError(f"stop takes at most 4 non-empty strings of at most "
                             f"{_STOP_MAX_CHARS} characters")
        for stop in stops:
            refused = first_refused_character(stop)
            if refused:
                raise ValueError(f"a stop string has a {refused}")
        return value

    def stop_list(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


class FeedbackRequest(BaseModel):
    """`POST /v1/feedback`: a rating, correction or flag on one answer."""

    model_config = ConfigDict(extra="forbid")

    conversation_id: Identifier
    turn_event_id: UUID = Field(description="`flywheel.turn_event_id` of the answer.")
    kind: FeedbackKind
    rating: int | None = Field(default=None, ge=1, le=5)
    correction: str | None = None
    flag_reasons: list[FlagReason] = Field(default_factory=list)
    comment: str | None = Field(default=None, max_length=2_000)
