"""Private data in identifiers, metadata and feedback comments is redacted before any table.

Unit tests: the functions of `streams.pii_fields`, and the stateless stages (`Preparer`)
on encoded records, with no services.
"""

from __future__ import annotations

import json
import re
import uuid

import pytest
from pydantic import SecretStr

from deploy.settings.components import StreamsSettings
from schemas.base import ID_PATTERN
from schemas.chat import ChatEvent, Role
from schemas.envelope import encode
from schemas.feedback import FeedbackEvent, FeedbackKind
from streams.pii_fields import redact_chat_event, redact_identifier, redact_metadata
from streams.prepare import PreparedFeedback, PreparedTurn, Preparer, Rejected
from streams.rows import Record

KEY = b"test-key-0123456789abcdef"


@pytest.mark.parametrize("value", ["alice@example.com", "acme-alice@exämple.com",
                                   "tenant-4155552671", "c-4111111111111111"])
def test_an_identifier_holding_private_data_becomes_a_valid_keyed_pseudonym(value: str) -> None:
    out = redact_identifier(value, key=KEY)
    assert out != value
    assert re.fullmatch(ID_PATTERN, out) and len(out) <= 128
    assert "@" not in out and "4155552671" not in out and "4111111111111111" not in out
    assert redact_identifier(value, key=KEY) == out  # joins hold
    assert redact_identifier(value, key=b"another-key-0123456789") != out


def test_an_identifier_without_private_data_is_kept() -> None:
    for value in ("conv-2026-12-06-17", "acme", "c123-1", "v20261206.3"):
        assert redact_identifier(value, key=KEY) == value


def test_metadata_values_and_keys_are_redacted_and_counted() -> None:
    metadata = {"email": "bob\u200e@example.org", "card": 4111111111111111, "plan": "pro",
                "alice@example.com": "x", "seats": 12, "beta": True}
    out, counts = redact_metadata(metadata, key=KEY)
    assert out["email"] == "[EMAIL]" and out["card"] == "[CARD]"
    assert out["plan"] == "pro" and out["seats"] == 12 and out["beta"] is True
    assert "alice@example.com" not in out and "x" in out.values()
    assert counts == {"email": 1, "card": 1}


def test_a_chat_event_without_private_fields_is_returned_as_it_is() -> None:
    event = ChatEvent(conversation_id="c1", turn_index=0, role=Role.USER, text="hi",
                      tenant="acme", metadata={"plan": "pro"})
    assert redact_chat_event(event, key=KEY)[0] is event


def _preparer() -> Preparer:
    options = StreamsSettings(pseudonym_key=SecretStr("test-key-0123456789abcdef"))
    return Preparer(options, chat_topic="chat", feedback_topic="feedback")


def _record(topic: str, value: bytes, offset: int = 0) -> Record:
    return Record(topic, 0, offset, None, value)


def test_the_stateless_stages_redact_identifiers_metadata_and_comment_before_any_row() -> None:
    turn = ChatEvent(conversation_id="alice@example.com", turn_index=0, role=Role.USER,
                     text="my card is 4111.1111.1111.1111 and phone 415 5552671",
                     tenant="bob@example.org",
                     metadata={"contact": "carol\u00ad@example.com", "card": "4111111111111111"})
    feedback = FeedbackEvent(conversation_id="alice@example.com", turn_event_id=turn.event_id,
                             kind=FeedbackKind.THUMBS_DOWN, tenant="bob@example.org",
                             comment="call me on 4155552671")
    prepared = _preparer().prepare([_record("chat", encode(turn, producer="t")),
                                    _record("feedback", encode(feedback, producer="t"), 1)])
    done_turn, done_feedback = prepared
    assert isinstance(done_turn, PreparedTurn) and isinstance(done_feedback, PreparedFeedback)
    assert done_turn.text == "my card is [CARD] and phone [PHONE]"
    assert done_turn.event.metadata == {"contact": "[EMAIL]", "card": "[CARD]"}
    assert done_turn.redactions == {"card": 2, "phone": 1, "email": 1}
    assert "@" not in done_turn.event.conversation_id + done_turn.event.tenant
    # The same pseudonyms on the feedback: the join of feedback to its turn holds.
    assert done_feedback.event.conversation_id == done_turn.event.conversation_id
    assert done_feedback.event.tenant == done_turn.event.tenant
    assert done_feedback.comment == "call me on [PHONE]"


def test_a_refused_record_keeps_no_private_data_in_its_quarantine_fields() -> None:
    body = {"conversation_id": "c", "turn_index": 0, "role": "user", "tenant": "eve@example.com",
            "text": "card 4111/1111/1111/1111", "event_id": str(uuid.uuid4()),
            "timestamp": "not a time"}
    envelope = json.dumps({"kind": "chat_event", "schema_version": 1, "producer": "t",
                           "payload": body}).encode()
    (rejected,) = _preparer().prepare([_record("chat", envelope)])
    assert isinstance(rejected, Rejected)
    assert rejected.tenant is not None and "@" not in rejected.tenant
    assert "4111" not in rejected.excerpt and "eve@" not in rejected.excerpt
    assert "4111" not in rejected.rejection.detail and "eve@" not in rejected.rejection.detail
