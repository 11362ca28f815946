"""Decoding enveloped chat events on the worker's hot path, with the contract's exact verdict.

`schemas.envelope.decode` parses the JSON, dumps it again and validates the whole
envelope, and the contract's `Text` check runs a Python loop over every character of a
turn (about 0.45 ms for a 1,500-character turn: more than the rest of decoding).
`decode_chat` validates the original bytes once, with the real contract except that the
text is a plain length-checked string, then checks the text with one regex that refuses
exactly what `Text` refuses (Unicode categories Cc and Cs but newline, tab and carriage
return). Whenever that path has any doubt (another kind or schema version, a text the
regex refuses, any contract violation) it hands the bytes to `decode`, so rejections
carry the contract's own field-level problems. `decode_feedback` does the same for
feedback events with the contract unchanged (`decode` builds the generic envelope class
on every call, about 0.17 ms).
"""

from __future__ import annotations

import logging
import re
from typing import Annotated

from pydantic import Field, ValidationError, create_model

from schemas.base import MAX_TEXT_CHARS
from schemas.chat import ChatEvent
from schemas.envelope import KINDS, Envelope, decode
from schemas.feedback import FeedbackEvent

logger = logging.getLogger(__name__)

#: Unicode categories Cc (C0, DEL, C1) and Cs (surrogates) but newline, tab and carriage
#: return: what the contract's `_no_control_characters` refuses.
_REFUSED_CHARACTERS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_CHAT_KIND = "chat_event"
_FEEDBACK_KIND = "feedback_event"
_FEEDBACK_ENVELOPE = Envelope[FeedbackEvent]
# ChatEvent with every field, validator and setting of the contract, but `text` checked
# for its length only; the characters are checked by `text_is_valid` afterwards.
_LengthCheckedText = create_model(
    "_LengthCheckedText", __base__=ChatEvent,
    text=(Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)], ...))
_ENVELOPE = Envelope[_LengthCheckedText]  # type: ignore[valid-type]


def text_is_valid(text: str) -> bool:
    """What the contract's `Text` type accepts: 1 to 32,000 characters, no control chars."""
    return 1 <= len(text) <= MAX_TEXT_CHARS and _characters_are_valid(text)


def _characters_are_valid(text: str) -> bool:
    # Printable text (the usual one-line turn) has no Cc or Cs character at all; the
    # regex decides for the rest (newlines, tabs, no-break spaces...).
    return text.isprintable() or _REFUSED_CHARACTERS.search(text) is None


def decode_chat(value: bytes) -> ChatEvent:
    """The ChatEvent of an enveloped record, validated as `schemas.envelope.decode` does.

    Raises:
        SchemaValidationError: not JSON, not an envelope, or the payload breaks its contract.
        UnknownSchemaError: unknown kind, a newer schema version, or not a chat event.
    """
    fast = _decode_fast(value)
    if fast is not None:
        return fast
    event = decode(value, expect=ChatEvent).payload
    assert isinstance(event, ChatEvent)
    return event


def _decode_fast(value: bytes) -> ChatEvent | None:
    try:
        envelope = _ENVELOPE.model_validate_json(value)
    except ValidationError:
        return None
    payload: ChatEvent = envelope.payload
    if (envelope.kind != _CHAT_KIND or envelope.schema_version != KINDS[_CHAT_KIND][1]
            or not _characters_are_valid(payload.text)):
        return None
    return _as_chat_event(payload)


def _can_adopt_fields() -> bool:
    # What `model_construct` does beyond adopting the validated fields: aliases, defaults
    # for missing fields, extra fields, private attributes, post-init. ChatEvent has none.
    fields = ChatEvent.__pydantic_fields__
    return (list(fields) == list(_LengthCheckedText.__pydantic_fields__)
            and not any(f.alias or f.validation_alias for f in fields.values())
            and ChatEvent.model_config.get("extra") != "allow"
            and not ChatEvent.__pydantic_post_init__ and not ChatEvent.__private_attributes__
            and not ChatEvent.__pydantic_root_model__)


_ADOPT_FIELDS = _can_adopt_fields()
_set_attribute = object.__setattr__


def _as_chat_event(payload: ChatEvent) -> ChatEvent:
    """A ChatEvent with the fields of a validated `_LengthCheckedText`.

    `model_construct` (about 15 us) walks every field for aliases and defaults; a
    validated payload has all of them, in the same order, so its field dict is adopted.
    """
    if not _ADOPT_FIELDS:
        return ChatEvent.model_construct(payload.model_fields_set, **payload.__dict__)
    event = ChatEvent.__new__(ChatEvent)
    _set_attribute(event, "__dict__", dict(payload.__dict__))
    _set_attribute(event, "__pydantic_fields_set__", payload.model_fields_set)
    _set_attribute(event, "__pydantic_extra__", None)
    _set_attribute(event, "__pydantic_private__", None)
    return event


def decode_feedback(value: bytes) -> FeedbackEvent:
    """The FeedbackEvent of an enveloped record, validated as `schemas.envelope.decode` does.

    Raises:
        SchemaValidationError: not JSON, not an envelope, or the payload breaks its contract.
        UnknownSchemaError: unknown kind, a newer schema version, or not a feedback event.
    """
    try:
        envelope = _FEEDBACK_ENVELOPE.model_validate_json(value)
    except ValidationError:
        envelope = None
    if (envelope is not None and envelope.kind == _FEEDBACK_KIND
            and envelope.schema_version == KINDS[_FEEDBACK_KIND][1]):
        return envelope.payload  # type: ignore[no-any-return]
    event = decode(value, expect=FeedbackEvent).payload
    assert isinstance(event, FeedbackEvent)
    return event
