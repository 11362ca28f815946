"""The envelope every event travels in, and the versioning policy of the contracts.

On the wire an event is the JSON of::

    {"kind": "chat_event", "schema_version": 1, "producer": "support-bot",
     "produced_at": "2026-11-26T10:00:00Z", "payload": {...}}

Compatibility policy:
- A new field is added with a default; that is a compatible change and keeps the version.
- Renaming, removing or tightening a field bumps `schema_version` of that kind, and an
  upgrader from the previous version is registered in `UPGRADERS`. Consumers upgrade old
  payloads on read, so every version ever produced stays readable
  (tests/schemas/fixtures holds one stored payload per kind and version).
- Producers always write the current version.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import Field, TypeAdapter, ValidationError

from schemas.base import Contract, Identifier, UtcDatetime, utc_now
from schemas.chat import ChatEvent
from schemas.errors import FieldProblem, SchemaValidationError, UnknownSchemaError
from schemas.feedback import FeedbackEvent
from schemas.platform import Alert, ModelPublished, QuarantinedRecord

EventT = TypeVar("EventT", bound=Contract)

#: kind -> (model, current schema version)
KINDS: dict[str, tuple[type[Contract], int]] = {
    "chat_event": (ChatEvent, 1),
    "feedback_event": (FeedbackEvent, 1),
    "quarantined_record": (QuarantinedRecord, 1),
    "model_published": (ModelPublished, 1),
    "alert": (Alert, 1),
}

Upgrader = Callable[[dict[str, Any]], dict[str, Any]]
#: (kind, from_version) -> function turning that version's payload into the next version's.
UPGRADERS: dict[tuple[str, int], Upgrader] = {}


class Envelope(Contract, Generic[EventT]):
    """Metadata around one event: what it is, which contract version, who produced it."""

    kind: str
    """Which contract the payload follows, e.g. `chat_event`."""
    schema_version: int = Field(ge=1)
    """Version of that contract the payload was written with."""
    producer: Identifier
    """Name of the service or SDK user that produced the event."""
    produced_at: UtcDatetime = Field(default_factory=utc_now)
    """When the producer serialised the event."""
    payload: EventT
    """The event itself."""


_KIND_OF: dict[type[Contract], str] = {model: kind for kind, (model, _) in KINDS.items()}
_PRODUCER = TypeAdapter(Identifier)


def kind_of(model: type[Contract]) -> str:
    """The envelope kind of a contract class.

    Raises:
        UnknownSchemaError: the class is not an event contract.
    """
    try:
        return _KIND_OF[model]
    except KeyError:
        raise UnknownSchemaError(
            f"{model.__name__} is not an event contract; known: {list(KINDS)}"
        ) from None


@functools.lru_cache(maxsize=1024)
def _envelope_head(kind: str, producer: str) -> bytes:
    try:
        _PRODUCER.validate_python(producer)
    except ValidationError as e:
        raise SchemaValidationError("envelope", problems_of(e, prefix="producer")) from e
    return (
        f'{{"kind":"{kind}","schema_version":{KINDS[kind][1]},'
        f'"producer":{json.dumps(producer)},"produced_at":"'
    ).encode()


#: (Unix second, its `YYYY-MM-DDTHH:MM:SS` in UTC): one formatting per second, not per event.
_second: tuple[int, bytes] = (-1, b"")


def _produced_at() -> bytes:
    """Now in UTC as pydantic writes it: `...T10:00:00.123456Z`, or `...T10:00:00Z`."""
    global _second
    seconds, micros = divmod(time.time_ns() // 1000, 1_000_000)
    cached, prefix = _second
    if seconds != cached:
        prefix = datetime.fromtimestamp(seconds, UTC).isoformat()[:19].encode()
        _second = (seconds, prefix)
    return b"%s.%06dZ" % (prefix, micros) if micros else prefix + b"Z"


def encode(event: Contract, *, producer: str) -> bytes:
    """Serialise an event in its envelope at the current schema version.

    The bytes equal `Envelope(...).model_dump_json()`, assembled directly because this is
    the producers' hot path (`encoder` does the same with the per-call look-ups done once).

    Raises:
        UnknownSchemaError: the event is not of an event contract.
        SchemaValidationError: `producer` is not a valid identifier.
    """
    head = _envelope_head(kind_of(type(event)), producer)
    payload = type(event).__pydantic_serializer__.to_json(event)
    return b"".join((head, _produced_at(), b'","payload":', payload, b"}"))


def encoder(model: type[EventT], *, producer: str) -> Callable[[EventT], bytes]:
    """`encode` for events of exactly `model` from one producer, checked once, not per event.

    The returned function writes the same bytes as `encode`. It does not check the type of
    its argument: the caller makes sure it is a `model` (a subclass would be serialised
    with `model`'s fields only, where `encode` refuses it).

    Raises:
        UnknownSchemaError: `model` is not an event contract.
        SchemaValidationError: `producer` is not a valid identifier.
    """
    head = _envelope_head(kind_of(model), producer)
    to_json = model.__pydantic_serializer__.to_json
    join = b"".join

    def encode_one(event: EventT) -> bytes:
        return join((head, _produced_at(), b'","payload":', to_json(event), b"}"))

    return encode_one


def decode(data: bytes | str, *, expect: type[EventT] | None = None) -> Envelope[EventT]:
    """Parse an enveloped event, upgrading older schema versions to the current one.

    Raises:
        SchemaValidationError: not JSON, not an envelope, or the payload breaks its contract;
            `problems` names each bad field.
        UnknownSchemaError: unknown kind, a version newer than this release, or not `expect`.
    """
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SchemaValidationError(
            "envelope", [FieldProblem("(body)", f"not valid UTF-8 JSON: {e}", "not_json")]
        ) from e
    if not isinstance(raw, dict):
        raise SchemaValidationError(
            "envelope", [FieldProblem("(body)", "must be a JSON object", "not_json")]
        )
    kind = raw.get("kind")
    if kind not in KINDS:
        raise UnknownSchemaError(f"unknown event kind {kind!r}; expected one of {list(KINDS)}")
    model, current = KINDS[kind]
    if expect is not None and model is not expect:
        raise UnknownSchemaError(f"expected a {kind_of(expect)} event, got {kind!r}")
    version = raw.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise SchemaValidationError(
            kind, [FieldProblem("schema_version", "must be a positive integer", "int_type")]
        )
    if version > current:
        raise UnknownSchemaError(
            f"{kind} schema_version {version} is newer than this release knows ({current}); "
            "upgrade chat-flywheel on the consumer"
        )
    payload = raw.get("payload")
    while version < current and isinstance(payload, dict):
        payload = UPGRADERS[(kind, version)](payload)
        version += 1
    upgraded = {**raw, "schema_version": current, "payload": payload}
    try:
        return Envelope[model].model_validate_json(json.dumps(upgraded))  # type: ignore[valid-type]
    except ValidationError as e:
        raise SchemaValidationError(kind, problems_of(e)) from e


def parse_event(model: type[EventT], data: bytes | str | dict[str, Any]) -> EventT:
    """Validate one bare event (no envelope), from JSON text or a JSON-like dict.

    Raises:
        SchemaValidationError: the payload breaks the contract; `problems` names each field.
    """
    text = data if isinstance(data, bytes | str) else json.dumps(data)
    try:
        return model.model_validate_json(text)
    except ValidationError as e:
        raise SchemaValidationError(model.__name__, problems_of(e)) from e


def problems_of(error: ValidationError, *, prefix: str = "") -> list[FieldProblem]:
    """Field-level problems of a pydantic error, with dotted field paths."""
    problems = []
    for item in error.errors(include_url=False):
        field = ".".join([prefix] * bool(prefix) + [str(p) for p in item["loc"]]) or "(body)"
        problems.append(FieldProblem(field, item["msg"], item["type"]))
    return problems
