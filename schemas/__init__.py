"""Data contracts shared by every part of Flywheel: events, their envelope and versions."""

from schemas.base import MAX_METADATA_BYTES, MAX_TEXT_CHARS, hash_user_id
from schemas.chat import ChatEvent, Role
from schemas.envelope import KINDS, Envelope, decode, encode, parse_event
from schemas.errors import FieldProblem, SchemaValidationError, UnknownSchemaError
from schemas.feedback import FeedbackEvent, FeedbackKind, FlagReason
from schemas.platform import (
    Alert,
    DatasetSnapshot,
    ModelPublished,
    QuarantinedRecord,
    ReasonCode,
    Severity,
)

__all__ = [
    "KINDS",
    "MAX_METADATA_BYTES",
    "MAX_TEXT_CHARS",
    "Alert",
    "ChatEvent",
    "DatasetSnapshot",
    "Envelope",
    "FeedbackEvent",
    "FeedbackKind",
    "FieldProblem",
    "FlagReason",
    "ModelPublished",
    "QuarantinedRecord",
    "ReasonCode",
    "Role",
    "SchemaValidationError",
    "Severity",
    "UnknownSchemaError",
    "decode",
    "encode",
    "hash_user_id",
    "parse_event",
]
