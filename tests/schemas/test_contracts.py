"""Field-level validation of the contracts, with a table of bad inputs and fuzzing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import (
    MAX_TEXT_CHARS,
    ChatEvent,
    FeedbackEvent,
    SchemaValidationError,
    hash_user_id,
    parse_event,
)


def chat(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "conversation_id": "c-1",
        "turn_index": 0,
        "role": "user",
        "text": "How do I reset my password?",
        "tenant": "acme",
        "timestamp": "2026-11-26T10:00:00+01:00",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


def feedback(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "conversation_id": "c-1",
        "turn_event_id": str(uuid4()),
        "kind": "thumbs_down",
        "tenant": "acme",
        "timestamp": "2026-11-26T10:00:00Z",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


def test_a_valid_user_turn_parses_and_is_stored_in_utc() -> None:
    event = parse_event(ChatEvent, chat())
    assert event.timestamp == datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    assert event.timestamp.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


BAD_CHAT = [
    ("naive timestamp", chat(timestamp="2026-11-26T10:00:00"), "timestamp"),
    ("unknown role", chat(role="bot"), "role"),
    ("empty text", chat(text=""), "text"),
    ("text over the cap", chat(text="a" * (MAX_TEXT_CHARS + 1)), "text"),
    ("NUL in text", chat(text="hello\x00world"), "text"),
    ("escape sequence in text", chat(text="\x1b[31mred"), "text"),
    ("raw user id", chat(user_id_hash="alice@example.com"), "user_id_hash"),
    ("oversize metadata", chat(metadata={"blob": "x" * 5000}), "metadata"),
    ("nested metadata", chat(metadata={"a": {"b": 1}}), "metadata"),
    ("string turn index", chat(turn_index="3"), "turn_index"),
    ("negative turn index", chat(turn_index=-1), "turn_index"),
    ("unknown field", chat(sentiment="happy"), "sentiment"),
    ("missing tenant", chat(tenant=...), "tenant"),
    ("conversation id with spaces", chat(conversation_id="a b"), "conversation_id"),
    ("assistant turn without model", chat(role="assistant"), "(body)"),
    ("user turn with latency", chat(latency_ms=5.0), "(body)"),
    ("bad locale", chat(locale="English"), "locale"),
]


@pytest.mark.parametrize(("case", "payload", "field"), BAD_CHAT, ids=[c[0] for c in BAD_CHAT])
def test_bad_chat_events_name_the_field_at_fault(case: str, payload: Any, field: str) -> None:
    with pytest.raises(SchemaValidationError) as info:
        parse_event(ChatEvent, payload)
    assert field in [p.field for p in info.value.problems], info.value


BAD_FEEDBACK = [
    ("rating without value", feedback(kind="rating"), "(body)"),
    ("rating out of range", feedback(kind="rating", rating=6), "rating"),
    ("value on a thumbs", feedback(rating=3), "(body)"),
    ("correction without text", feedback(kind="correction"), "(body)"),
    ("flag without reasons", feedback(kind="flag"), "(body)"),
    ("unknown flag reason", feedback(kind="flag", flag_reasons=["ugly"]), "flag_reasons.0"),
    ("not a uuid", feedback(turn_event_id="turn-7"), "turn_event_id"),
]


@pytest.mark.parametrize(
    ("case", "payload", "field"), BAD_FEEDBACK, ids=[c[0] for c in BAD_FEEDBACK]
)
def test_bad_feedback_names_the_field_at_fault(case: str, payload: Any, field: str) -> None:
    with pytest.raises(SchemaValidationError) as info:
        parse_event(FeedbackEvent, payload)
    assert field in [p.field for p in info.value.problems], info.value


@pytest.mark.parametrize(
    ("payload", "negative"),
    [
        (feedback(kind="thumbs_up"), False),
        (feedback(kind="thumbs_down"), True),
        (feedback(kind="rating", rating=2), True),
        (feedback(kind="rating", rating=4), False),
        (feedback(kind="flag", flag_reasons=["biased"]), True),
        (feedback(kind="correction", correction="Say it like this."), True),
    ],
)
def test_negative_feedback_is_recognised(payload: dict[str, Any], negative: bool) -> None:
    assert parse_event(FeedbackEvent, payload).is_negative is negative


def test_user_hash_is_stable_per_salt_and_differs_across_salts() -> None:
    a = hash_user_id("alice", salt=b"s" * 16)
    assert a == hash_user_id("alice", salt=b"s" * 16)
    assert a != hash_user_id("alice", salt=b"t" * 16)
    assert parse_event(ChatEvent, chat(user_id_hash=a)).user_id_hash == a
    with pytest.raises(ValueError, match="16 bytes"):
        hash_user_id("alice", salt=b"short")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    field=st.sampled_from(sorted(ChatEvent.model_fields)),
    value=json_values,
)
def test_hostile_field_values_give_a_validation_error_or_a_valid_event(
    field: str, value: Any
) -> None:
    payload = chat(**{field: value})
    try:
        event = parse_event(ChatEvent, payload)
    except SchemaValidationError as e:
        assert e.problems and all(p.field and p.message for p in e.problems)
    else:
        assert isinstance(event, ChatEvent)


@settings(max_examples=1000, deadline=None)
@given(data=st.binary(max_size=512))
def test_arbitrary_bytes_never_crash_the_parser(data: bytes) -> None:
    for model in (ChatEvent, FeedbackEvent):
        try:
            parse_event(model, data)
        except SchemaValidationError as e:
            assert e.problems


def test_event_json_round_trip_keeps_every_field() -> None:
    event = parse_event(ChatEvent, chat(metadata={"app": "ios", "n": 3, "ok": True}))
    assert parse_event(ChatEvent, json.loads(event.model_dump_json())) == event


def test_python_callers_may_pass_enum_values_as_strings_but_not_other_types() -> None:
    event = ChatEvent(conversation_id="c", turn_index=0, role="user", text="hi",  # type: ignore[arg-type]
                      tenant="acme")
    assert event.role.value == "user"
    with pytest.raises(ValueError, match="turn_index"):
        ChatEvent(conversation_id="c", turn_index="0", role="user", text="hi",  # type: ignore[arg-type]
                  tenant="acme")


def test_the_control_character_check_matches_unicode_categories_for_every_code_point() -> None:
    import unicodedata

    from schemas.base import _FORBIDDEN_CHARACTER

    wrong = [
        cp for cp in range(0x110000)
        if (unicodedata.category(chr(cp)) in {"Cc", "Cs"} and chr(cp) not in "\n\t\r")
        != (_FORBIDDEN_CHARACTER.match(chr(cp)) is not None)
    ]
    assert wrong == []
