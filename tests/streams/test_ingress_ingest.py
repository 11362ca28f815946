"""The ingest API answers hostile bodies with a 4xx and quarantines each (issue 17, 8-13).

In-process app, real broker: every refused body must reach the quarantine topic under the
`quarantine_id` the answer gave.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from deploy.settings import FlywheelSettings
from schemas import QuarantinedRecord
from schemas.platform import QUARANTINE_KEPT_BYTES
from streams.ingest import create_app
from streams.topics import QUARANTINE
from tests.inference.conftest import read_topic

pytestmark = pytest.mark.integration

KEY = "flywheel-dev-key"
BEARER = {"Authorization": f"Bearer {KEY}"}
ROUTES = ["/v1/events/chat", "/v1/events/feedback", "/v1/events/chat/batch",
          "/v1/events/feedback/batch"]


def chat(**changes: Any) -> dict[str, Any]:
    return {"conversation_id": f"c-{uuid.uuid4().hex[:8]}", "turn_index": 0, "role": "user",
            "text": "Where is my parcel?", "tenant": "acme",
            "timestamp": "2026-11-26T10:00:00Z", **changes}


def feedback(**changes: Any) -> dict[str, Any]:
    return {"conversation_id": "c-1", "turn_event_id": str(uuid.uuid4()), "kind": "thumbs_up",
            "tenant": "acme", **changes}



def quarantined(settings: FlywheelSettings, *record_ids: str) -> dict[str, QuarantinedRecord]:
    """The quarantine topic's records with these ids (waits until all are there)."""
    wanted = set(record_ids)

    def found(payloads: list[Any]) -> bool:
        return wanted <= {str(p.record_id) for p in payloads}

    payloads = read_topic(settings, QUARANTINE.name, until=found, timeout_s=30)
    return {str(p.record_id): p for p in payloads if str(p.record_id) in wanted}


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("body", [
    pytest.param(b"[" * 1_000 + b"]" * 1_000, id="nested-1000-list"),
    pytest.param(b'{"a":' * 5_000 + b"1" + b"}" * 5_000, id="nested-5000-object"),
    pytest.param(b'{"turn_index": ' + b"9" * 4_301 + b"}", id="int-4301-digits"),
    pytest.param(b'{"text": "\\ud800"}', id="lone-surrogate"),
    pytest.param(b'{"latency_ms": NaN}', id="nan"),
    pytest.param(b"", id="empty"),
])
def test_a_body_no_json_decoder_should_trust_gets_400_and_is_quarantined(
    api: TestClient, settings: FlywheelSettings, route: str, body: bytes
) -> None:
    response = api.post(route, content=body, headers=BEARER)

    assert response.status_code == 400, response.text
    [error] = response.json()["errors"]
    assert error["field"] == "(body)" and error["code"] == "not_json"
    record_id = response.json()["quarantine_id"]
    record = quarantined(settings, record_id)[record_id]
    assert record.topic == f"ingest:{route}" and record.reasons[0].value in ("not_json", "empty")
    assert record.original == body and record.original_sha256 == hashlib.sha256(body).hexdigest()


def test_a_refused_body_over_750_kb_is_quarantined_as_an_excerpt_with_size_and_hash(
    api: TestClient, settings: FlywheelSettings
) -> None:
    body = json.dumps(chat(text="y" * 1_000_000)).encode()

    response = api.post("/v1/events/chat", content=body, headers=BEARER)

    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["text"]
    record_id = response.json()["quarantine_id"]
    record = quarantined(settings, record_id)[record_id]
    assert record.original == body[:QUARANTINE_KEPT_BYTES] and record.original_truncated
    assert record.original_size_bytes == len(body)
    assert record.original_sha256 == hashlib.sha256(body).hexdigest()


def test_a_body_over_the_cap_gets_413_and_what_was_read_is_quarantined(
    api: TestClient, settings: FlywheelSettings
) -> None:
    body = b"x" * (settings.ingest.max_body_bytes + 1)

    response = api.post("/v1/events/chat", content=body, headers=BEARER)

    assert response.status_code == 413 and "ingest.max_body_bytes" in response.text
    record_id = response.json()["quarantine_id"]
    record = quarantined(settings, record_id)[record_id]
    assert record.reasons[0].value == "too_long" and record.original_size_bytes == len(body)


@pytest.mark.parametrize("timestamp", [
    "9999-12-31T23:59:59Z", "2149-06-06T00:00:00Z", "2106-02-07T06:28:16Z",
    "2100-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "1900-01-01T00:00:00Z",
    "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00",
])
def test_a_timestamp_outside_the_stored_range_gets_422_naming_the_field(
    api: TestClient, timestamp: str
) -> None:
    for route, event in (("/v1/events/chat", chat(timestamp=timestamp)),
                         ("/v1/events/feedback", feedback(timestamp=timestamp))):
        response = api.post(route, json=event, headers=BEARER)

        assert response.status_code == 422, response.text
        [error] = response.json()["errors"]
        assert error["field"] == "timestamp"
        assert "quarantine_id" in response.json()


@pytest.mark.parametrize("timestamp", ["2000-01-01T00:00:00Z", "2099-12-31T23:59:59Z"])
def test_the_ends_of_the_stored_range_are_accepted(api: TestClient, timestamp: str) -> None:
    response = api.post("/v1/events/chat", json=chat(timestamp=timestamp), headers=BEARER)

    assert response.status_code == 202, response.text


@pytest.mark.parametrize("comment", ["a\x00b", "\x1b[31mred", "\x7f", "\x85"])
def test_a_comment_with_a_control_character_gets_422_naming_the_comment(
    api: TestClient, comment: str
) -> None:
    response = api.post("/v1/events/feedback", json=feedback(comment=comment),
                           headers=BEARER)

    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["field"] == "comment" and "control character" in error["message"]


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer wrong", "X-API-Key": KEY},
    {"Authorization": f"Bearer {KEY}", "X-API-Key": "wrong"},
    {"X-API-Key": KEY},
    {"Authorization": f"bearer   {KEY} "},
])
def test_either_valid_credential_is_enough(api: TestClient, headers: dict[str, str]) -> None:
    assert api.post("/v1/events/chat", json=chat(), headers=headers).status_code == 202


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer wrong", "X-API-Key": "wrong"}, {"Authorization": KEY}, {},
])
def test_no_valid_credential_gets_401(api: TestClient, headers: dict[str, str]) -> None:
    response = api.post("/v1/events/chat", json=chat(), headers=headers)

    assert response.status_code == 401 and "X-API-Key" in response.json()["errors"][0]["message"]


def test_a_503_lists_the_event_ids_and_says_a_retry_with_them_is_safe(
    settings: FlywheelSettings,
) -> None:
    down = settings.model_copy(update={
        "kafka": settings.kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:1"}),
        "ingest": settings.ingest.model_copy(update={"ack_timeout_s": 0.5}),
    })
    given = str(uuid.uuid4())
    events = [chat(event_id=given), chat()]  # the second gets its id from the ingest
    with TestClient(create_app(down)) as offline:
        response = offline.post("/v1/events/chat/batch", json={"events": events},
                                headers=BEARER)

    assert response.status_code == 503 and response.headers["Retry-After"].isdigit()
    event_ids = response.json()["event_ids"]
    assert len(event_ids) == 2 and event_ids[0] == given and uuid.UUID(event_ids[1])
    assert "same event_id" in response.json()["errors"][0]["message"]


def test_of_a_duplicated_key_the_last_value_counts(api: TestClient) -> None:
    body = json.dumps(chat())[:-1] + ', "role": "robot"}'

    response = api.post("/v1/events/chat", content=body.encode(), headers=BEARER)

    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["role"]


def test_refusals_are_counted_by_service_route_status_and_code(api: TestClient) -> None:
    api.post("/v1/events/feedback", content=b"[" * 300, headers=BEARER)
    api.post("/v1/events/feedback", json=feedback(), headers={"X-API-Key": "wrong"})

    text = api.get("/metrics/").text

    assert ('flywheel_ingress_refused_total{code="not_json",route="/v1/events/feedback",'
            'service="ingest",status="400"}') in text
    assert ('flywheel_ingress_refused_total{code="auth",route="/v1/events/feedback",'
            'service="ingest",status="401"}') in text
