"""Envelope round trips and the backward-compatibility promise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas import KINDS, ChatEvent, FeedbackEvent, Role, decode, encode
from schemas.envelope import UPGRADERS
from schemas.errors import SchemaValidationError, UnknownSchemaError
from schemas.export import export_json_schemas

FIXTURES = Path(__file__).parent / "fixtures"


def _stored_payloads() -> list[tuple[str, int, Path]]:
    cases = []
    for kind, (_model, current) in KINDS.items():
        for version in range(1, current + 1):
            cases.append((kind, version, FIXTURES / kind / f"v{version}.json"))
    return cases


@pytest.mark.parametrize(("kind", "version", "path"), _stored_payloads())
def test_every_stored_payload_of_every_version_still_parses(
    kind: str, version: int, path: Path
) -> None:
    assert path.exists(), f"store a {kind} v{version} payload at {path} before bumping the version"
    envelope = decode(path.read_bytes())
    assert envelope.kind == kind
    assert envelope.schema_version == KINDS[kind][1]
    assert isinstance(envelope.payload, KINDS[kind][0])


def test_every_version_below_the_current_has_an_upgrader() -> None:
    for kind, (_model, current) in KINDS.items():
        for version in range(1, current):
            assert (kind, version) in UPGRADERS, f"{kind} v{version} has no upgrader"


def test_reencoding_a_stored_payload_gives_the_same_event() -> None:
    stored = decode((FIXTURES / "chat_event" / "v1.json").read_bytes())
    again = decode(encode(stored.payload, producer="test"))
    assert again.payload == stored.payload
    assert isinstance(stored.payload, ChatEvent)
    assert stored.payload.text.endswith("😊")


def test_decode_rejects_a_version_newer_than_this_release() -> None:
    raw = json.loads((FIXTURES / "alert" / "v1.json").read_text())
    raw["schema_version"] = 99
    with pytest.raises(UnknownSchemaError, match="upgrade chat-flywheel"):
        decode(json.dumps(raw))


def test_decode_rejects_an_unknown_kind_and_names_the_known_ones() -> None:
    with pytest.raises(UnknownSchemaError, match="chat_event"):
        decode(b'{"kind": "tweet", "schema_version": 1, "payload": {}}')


def test_decode_of_non_json_says_so() -> None:
    with pytest.raises(SchemaValidationError) as info:
        decode(b"\xff\xfe not json")
    assert info.value.problems[0].code == "not_json"


def test_decode_can_insist_on_a_kind() -> None:
    data = (FIXTURES / "chat_event" / "v1.json").read_bytes()
    with pytest.raises(UnknownSchemaError, match="expected a feedback_event"):
        decode(data, expect=FeedbackEvent)


def test_payload_errors_carry_the_dotted_field_path() -> None:
    raw = json.loads((FIXTURES / "chat_event" / "v1.json").read_text())
    raw["payload"]["role"] = "robot"
    with pytest.raises(SchemaValidationError) as info:
        decode(json.dumps(raw))
    assert [p.field for p in info.value.problems] == ["payload.role"]


def test_export_writes_one_json_schema_per_kind(tmp_path: Path) -> None:
    written = export_json_schemas(tmp_path)
    assert sorted(p.name for p in written) == sorted(f"{k}.v1.schema.json" for k in KINDS)
    chat = json.loads((tmp_path / "chat_event.v1.schema.json").read_text())
    assert chat["properties"]["kind"]["const"] == "chat_event"
    payload_ref = chat["properties"]["payload"]["$ref"].rsplit("/", 1)[-1]
    assert set(chat["$defs"][payload_ref]["required"]) >= {"conversation_id", "role", "text"}


def test_encode_refuses_a_model_that_is_not_an_event() -> None:
    from schemas.platform import DatasetSnapshot

    with pytest.raises(UnknownSchemaError):
        encode(DatasetSnapshot.model_construct(), producer="x")  # type: ignore[call-arg]


def test_role_values_are_the_documented_ones() -> None:
    assert {r.value for r in Role} == {"user", "assistant", "system"}


def test_fast_encoding_equals_the_envelope_model_serialisation() -> None:
    from datetime import datetime

    from schemas.envelope import Envelope

    stored = decode((FIXTURES / "chat_event" / "v1.json").read_bytes())
    fast = json.loads(encode(stored.payload, producer="svc-1"))
    slow = json.loads(
        Envelope[ChatEvent](kind="chat_event", schema_version=1, producer="svc-1",
                            produced_at=datetime.fromisoformat(fast["produced_at"]),
                            payload=stored.payload)
        .model_dump_json()
    )
    assert fast == slow


@pytest.mark.parametrize(
    "now_ns", [1_795_682_088_000_000_000, 1_795_682_088_000_001_999, 1_795_682_088_999_999_000],
    ids=["whole second", "one microsecond", "last microsecond"],
)
def test_fast_encoding_is_byte_for_byte_the_envelope_model_json(
    monkeypatch: pytest.MonkeyPatch, now_ns: int
) -> None:
    from datetime import UTC, datetime

    from schemas.envelope import Envelope

    monkeypatch.setattr("schemas.envelope.time.time_ns", lambda: now_ns)
    stored = decode((FIXTURES / "chat_event" / "v1.json").read_bytes())
    produced_at = datetime.fromtimestamp(now_ns // 1000 / 1e6, UTC)
    slow = Envelope[ChatEvent](kind="chat_event", schema_version=1, producer="svc-1",
                               produced_at=produced_at, payload=stored.payload)
    assert encode(stored.payload, producer="svc-1") == slow.model_dump_json().encode()


def test_an_invalid_producer_name_is_refused() -> None:
    stored = decode((FIXTURES / "chat_event" / "v1.json").read_bytes())
    with pytest.raises(SchemaValidationError, match="producer"):
        encode(stored.payload, producer="has spaces")


def test_an_encoder_writes_the_same_bytes_as_encode(monkeypatch: pytest.MonkeyPatch) -> None:
    from schemas.envelope import encoder

    monkeypatch.setattr("schemas.envelope.time.time_ns", lambda: 1_795_682_088_123_456_789)
    stored = decode((FIXTURES / "chat_event" / "v1.json").read_bytes())
    encode_chat = encoder(ChatEvent, producer="svc-1")
    assert encode_chat(stored.payload) == encode(stored.payload, producer="svc-1")


def test_an_encoder_checks_its_kind_and_producer_once_when_built() -> None:
    from schemas.envelope import encoder
    from schemas.platform import DatasetSnapshot

    with pytest.raises(UnknownSchemaError):
        encoder(DatasetSnapshot, producer="svc-1")  # type: ignore[type-var]
    with pytest.raises(SchemaValidationError, match="producer"):
        encoder(FeedbackEvent, producer="has spaces")
