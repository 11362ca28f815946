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
    return value.astimezone(UTC)


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
Identifier = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS, pattern=ID_PATTERN)]
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
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
