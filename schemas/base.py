"""Building blocks shared by every data contract: strict models and validated field types."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

#: Longest text of one turn or correction, in characters. Longer text is a client bug or
#: an attack; the stream processors enforce their own, tighter training limits.
MAX_TEXT_CHARS = 32_000
#: Largest client metadata, in bytes of its compact JSON form.
MAX_METADATA_BYTES = 4_096
#: Identifiers (tenants, conversations, model names) are short printable tokens.
MAX_ID_CHARS = 128
#: The range of an event's `timestamp`, inclusive. The warehouse partitions turns by day
#: and expires them at `toDateTime(ts) + TTL`, a 32-bit DateTime that wraps after
#: 2106-02-07: a later timestamp (or one a TTL pushes past it) is deleted at the next
#: merge, and a timestamp before 2000 lands in a partition of its own and is expired at
#: once or, before 1970, never. Ending at 2099 leaves room for TTLs of up to 6 years.
MIN_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)
MAX_EVENT_TIME = datetime(2099, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)

#: Unicode categories Cc (C0 and C1 controls) and Cs (lone surrogates), except newline,
#: tab and carriage return. One regex scan: this check runs on every event produced.
_FORBIDDEN_CHARACTER = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]*$"
_HASH_PATTERN = re.compile(r"^[0-9a-f]{64}$")


class Contract(BaseModel):
    """Base of every contract: immutable, no unknown fields, no silent type coercion."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        strict=True,
        str_strip_whitespace=False,
        ser_json_bytes="base64",
        val_json_bytes="base64",
        use_attribute_docstrings=True,
    )


def _no_control_characters(value: str) -> str:
    found = _FORBIDDEN_CHARACTER.search(value)
    if found is not None:
        raise ValueError(
            f"control character U+{ord(found.group()):04X} at position {found.start()}; "
            "remove it (only newline, tab and carriage return are allowed)"
        )
    return value


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError as e:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise ValueError("is outside the years 1-9999 in UTC; send a time between "
                         "2000-01-01 and 2099-12-31 UTC") from e


def _in_event_range(value: datetime) -> datetime:
    if not MIN_EVENT_TIME <= value <= MAX_EVENT_TIME:
        raise ValueError(
            f"{value.isoformat()} is outside the range Flywheel stores, "
            f"{MIN_EVENT_TIME:%Y-%m-%d} to {MAX_EVENT_TIME:%Y-%m-%d} UTC; send the time the "
            "event happened, with its timezone"
        )
    return value


def _is_user_hash(value: str) -> str:
    if not _HASH_PATTERN.match(value):
        raise ValueError(
            "must be a 64-character lowercase hex SHA-256 digest, never a raw user id; "
            "use schemas.hash_user_id(raw_id, salt=...)"
        )
    return value


Text = Annotated[
    str, Field(min_length=1, max_length=MAX_TEXT_CHARS), AfterValidator(_no_control_characters)
]
#: Short free text (a feedback comment): may be empty, no control characters either.
Comment = Annotated[str, Field(max_length=2_000), AfterValidator(_no_control_characters)]
Identifier = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS, pattern=ID_PATTERN)]
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
#: When an event happened: a `UtcDatetime` within `MIN_EVENT_TIME`..`MAX_EVENT_TIME`.
EventTime = Annotated[UtcDatetime, AfterValidator(_in_event_range)]
UserHash = Annotated[str, AfterValidator(_is_user_hash)]


#: Enums accept their string values from Python code too (strict mode alone would demand
#: enum instances there); nothing else is coerced.
def lax_enum() -> Any:
    return Field(strict=False)


def hash_user_id(raw_user_id: str, *, salt: bytes) -> str:
    """The hashed form of a user id that contracts accept (HMAC-SHA-256 with a tenant salt).

    Raises:
        ValueError: the salt is shorter than 16 bytes, too weak to stop a dictionary attack.
    """
    if len(salt) < 16:
        raise ValueError("salt must be at least 16 bytes; generate one with os.urandom(32)")
    return hmac.new(salt, raw_user_id.encode(), hashlib.sha256).hexdigest()


def utc_now() -> datetime:
    return datetime.now(UTC)
