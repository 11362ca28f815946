"""`FeedbackEvent`: what a user said about one assistant turn."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated
from uuid import UUID, uuid4

from pydantic import Field, model_validator

from schemas.base import (
    Comment,
    Contract,
    EventTime,
    Identifier,
    Text,
    UserHash,
    lax_enum,
    utc_now,
)


class FeedbackKind(StrEnum):
    """The kinds of feedback a user can give."""

    THUMBS_UP = "thumbs_up"
    THUMBS_DOWN = "thumbs_down"
    RATING = "rating"
    CORRECTION = "correction"
    FLAG = "flag"


class FlagReason(StrEnum):
    """Why a user flagged an answer."""

    HARMFUL = "harmful"
    BIASED = "biased"
    WRONG = "wrong"
    PRIVATE_DATA = "private_data"
    OTHER = "other"


class FeedbackEvent(Contract):
    """A rating, correction or flag on one assistant turn. Keyed by `conversation_id`."""

    event_id: UUID = Field(default_factory=uuid4)
    """Unique id of this feedback event."""
    conversation_id: Identifier
    """The conversation of the rated turn (the Kafka key)."""
    turn_event_id: UUID
    """`event_id` of the assistant `ChatEvent` this feedback rates."""
    kind: Annotated[FeedbackKind, lax_enum()]
    """`thumbs_up`, `thumbs_down`, `rating`, `correction` or `flag`."""
    rating: Annotated[int, Field(ge=1, le=5)] | None = None
    """1 (worst) to 5 (best); required for `rating`, absent otherwise."""
    correction: Text | None = None
    """The answer the user wanted; required for `correction`, absent otherwise."""
    flag_reasons: list[Annotated[FlagReason, lax_enum()]] = Field(
        default_factory=list, max_length=len(FlagReason)
    )
    """Why the answer was flagged; at least one for `flag`, none otherwise."""
    comment: Comment | None = None
    """Optional free text from the user, at most 2,000 characters, without control characters."""
    tenant: Identifier
    """The product or customer the conversation belongs to."""
    user_id_hash: UserHash | None = None
    """HMAC-SHA-256 of who gave the feedback; never the raw id."""
    timestamp: EventTime = Field(default_factory=utc_now)
    """When the feedback was given; must carry a timezone, is stored in UTC
    and lies within 2000-01-01..2099-12-31 (`schemas.base.MIN_EVENT_TIME`, `MAX_EVENT_TIME`)."""

    @model_validator(mode="after")
    def _fields_match_kind(self) -> FeedbackEvent:
        kind = self.kind
        if (kind is FeedbackKind.RATING) != (self.rating is not None):
            raise ValueError("`rating` (1-5) is required for kind `rating` and only for it")
        if (kind is FeedbackKind.CORRECTION) != (self.correction is not None):
            raise ValueError("`correction` text is required for kind `correction` and only for it")
        if (kind is FeedbackKind.FLAG) != bool(self.flag_reasons):
            raise ValueError("`flag_reasons` needs at least one reason for kind `flag` only")
        if len(set(self.flag_reasons)) != len(self.flag_reasons):
            raise ValueError("`flag_reasons` lists a reason twice")
        return self

    @property
    def is_negative(self) -> bool:
        """True for feedback that says the answer was bad."""
        return (
            self.kind in (FeedbackKind.THUMBS_DOWN, FeedbackKind.FLAG, FeedbackKind.CORRECTION)
            or (self.rating is not None and self.rating <= 2)
        )
