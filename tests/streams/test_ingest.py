"""The HTTP ingest service, in-process, producing to the real broker of the test stack."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from uuid import uuid4

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from deploy.settings import FlywheelSettings
from schemas import ChatEvent, QuarantinedRecord, decode
from streams.ingest import create_app
from streams.producer import ChatEventProducer
from streams.topics import QUARANTINE

pytestmark = pytest.mark.integration

KEY = {"Authorization": "Bearer flywheel-dev-key"}


def chat_payload(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "conversation_id": f"c-{uuid4().hex[:8]}", "turn_index": 0, "role": "user",
        "text": "Where is my parcel?", "tenant": "acme",
        "timestamp": "2026-11-26T10:00:00Z",
    }
    payload.update(changes)
    return payload



def test_a_valid_event_is_acknowledged_with_its_id_and_lands_on_kafka(
    api: TestClient, consume: Callable[..., list[Any]]
) -> None:
    payload = chat_payload()
    response = api.post("/v1/events/chat", json=payload, headers=KEY)
    assert response.status_code == 202, response.text
    [event_id] = response.json()["accepted"]
    landed = [
        decode(m.value()).payload for m in consume(ChatEventProducer.topic, 10_000, timeout_s=10)
    ]
    assert event_id in {str(e.event_id) for e in landed}


def test_a_batch_is_accepted_whole(api: TestClient) -> None:
    events = [chat_payload(turn_index=i) for i in range(20)]
    response = api.post("/v1/events/chat/batch", json={"events": events}, headers=KEY)
    assert response.status_code == 202
    assert len(response.json()["accepted"]) == 20


def test_a_batch_with_one_bad_event_is_refused_whole_with_its_index(api: TestClient) -> None:
    events = [chat_payload(), chat_payload(role="robot"), chat_payload()]
    response = api.post("/v1/events/chat/batch", json={"events": events}, headers=KEY)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["events.1.role"]


def test_field_errors_name_each_field(api: TestClient) -> None:
    response = api.post(
        "/v1/events/chat", json=chat_payload(timestamp="2026-11-26T10:00:00", turn_index=-1),
        headers=KEY,
    )
    assert response.status_code == 422
    assert {e["field"] for e in response.json()["errors"]} == {"timestamp", "turn_index"}


def test_a_body_that_is_not_json_gets_400(api: TestClient) -> None:
    response = api.post("/v1/events/feedback", content=b"\xff{not json", headers=KEY)
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "not_json"


def test_rejected_bodies_go_to_quarantine_with_a_reason(
    api: TestClient, consume: Callable[..., list[Any]]
) -> None:
    marker = f"quarantine-me-{uuid4().hex}"
    response = api.post("/v1/events/chat", json=chat_payload(role=marker), headers=KEY)
    assert response.status_code == 422
    found: list[QuarantinedRecord] = []
    for message in consume(QUARANTINE.name, 10_000, timeout_s=10):
        record = decode(message.value()).payload
        if marker.encode() in record.original:
            found.append(record)
    assert len(found) == 1
    assert found[0].reasons[0].value == "schema_violation"
    assert found[0].topic == "ingest:/v1/events/chat" and found[0].offset is None


def test_a_missing_api_key_gets_401(api: TestClient) -> None:
    assert api.post("/v1/events/chat", json=chat_payload()).status_code == 401
    wrong = {"X-API-Key": "guess"}
    assert api.post("/v1/events/chat", json=chat_payload(), headers=wrong).status_code == 401


def test_an_oversize_body_gets_413(api: TestClient, settings: FlywheelSettings) -> None:
    big = b"x" * (settings.ingest.max_body_bytes + 1)
    assert api.post("/v1/events/chat", content=big, headers=KEY).status_code == 413


def test_the_openapi_document_describes_every_route(api: TestClient) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    for route in ("/v1/events/chat", "/v1/events/chat/batch", "/v1/events/feedback",
                  "/v1/events/feedback/batch"):
        assert "requestBody" in paths[route]["post"]
        assert "422" in paths[route]["post"]["responses"]


def test_an_unreachable_broker_gets_503_with_a_retry_hint(settings: FlywheelSettings) -> None:
    down = settings.model_copy(update={
        "kafka": settings.kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:1"}),
        "ingest": settings.ingest.model_copy(update={"ack_timeout_s": 1.0}),
    })
    with TestClient(create_app(down)) as offline:
        response = offline.post("/v1/events/chat", json=chat_payload(), headers=KEY)
    assert response.status_code == 503
    assert response.headers["Retry-After"].isdigit()


json_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=10), kids,
                                                              max_size=3),
    max_leaves=10,
)


@hypothesis_settings(max_examples=600, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow])
@given(
    route=st.sampled_from(["/v1/events/chat", "/v1/events/feedback",
                           "/v1/events/chat/batch", "/v1/events/feedback/batch"]),
    body=st.one_of(
        st.binary(max_size=300),
        json_junk.map(lambda v: json.dumps(v).encode()),
        st.builds(lambda f, v: json.dumps(chat_payload(**{f: v})).encode(),
                  st.sampled_from(sorted(ChatEvent.model_fields)), json_junk),
    ),
)
def test_hostile_payloads_get_a_clear_4xx_never_a_500(
    api: TestClient, route: str, body: bytes
) -> None:
    response = api.post(route, content=body, headers=KEY)
    assert response.status_code in (202, 400, 422), response.text
    if response.status_code != 202:
        errors = response.json()["errors"]
        assert errors and all(e["field"] and e["message"] for e in errors)


def test_metrics_count_requests_by_route_and_status(api: TestClient) -> None:
    api.post("/v1/events/chat", json=chat_payload(), headers=KEY)
    api.post("/v1/events/chat", json=chat_payload(role="robot"), headers=KEY)
    text = api.get("/metrics/").text
    assert 'flywheel_ingest_requests_total{route="/v1/events/chat",status="202"}' in text
    assert 'flywheel_ingest_requests_total{route="/v1/events/chat",status="422"}' in text
    assert 'flywheel_ingest_events_total{kind="ChatEvent"}' in text
