"""The gateway answers hostile requests with an OpenAI-shaped 4xx (issue 17, items 8, 11, 13).

Most cases are refused before Triton is asked, so the gateway here names a model Triton
does not have: a request that passes every check then gets 503, which still shows the
checks let it through. Kafka is the test stack's broker.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings
from inference.client import GenerationOptions, build_inputs
from inference.errors import BadRequestError
from inference.gateway.server import gateway_in_thread
from streams.topics import CHAT_EVENTS, FEEDBACK_EVENTS, QUARANTINE, ensure_topics
from tests.inference.conftest import read_topic

pytestmark = pytest.mark.integration

KEY = "flywheel-dev-key"
BEARER = {"Authorization": f"Bearer {KEY}"}
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def gateway(
    running: Callable[..., Supervisor], settings: FlywheelSettings
) -> Iterator[httpx.Client]:
    running("kafka", "triton")
    ensure_topics(settings, [QUARANTINE])
    topics: dict[str, str] = {}
    for name, spec in (("chat_topic", CHAT_EVENTS), ("feedback_topic", FEEDBACK_EVENTS)):
        topics[name] = f"{spec.name}.t{uuid.uuid4().hex[:10]}"
        ensure_topics(settings, [dataclasses.replace(spec, name=topics[name])])
    inference = settings.inference.model_copy(update={"max_body_bytes": 64 * 1024,
                                                      "max_prompt_chars": 2_000})
    capped = settings.model_copy(update={"inference": inference})
    with gateway_in_thread(capped, model=f"absent-{uuid.uuid4().hex[:6]}", **topics) as url, \
            httpx.Client(base_url=url, headers=BEARER, timeout=30) as http:
        yield http


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["message"]
    return error


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/feedback"])
@pytest.mark.parametrize("body", [
    pytest.param(b"[" * 1_000 + b"]" * 1_000, id="nested-1000"),
    pytest.param(b'{"max_tokens": ' + b"9" * 4_301 + b"}", id="int-4301-digits"),
    pytest.param(b'{"stop": "\\ud800", "messages": []}', id="lone-surrogate"),
    pytest.param(b'{"temperature": Infinity}', id="infinity"),
    pytest.param(b"\xff\xfe{\x00}\x00", id="utf-16"),
    pytest.param(b"", id="empty"),
])
def test_a_body_no_json_decoder_should_trust_gets_an_openai_400(
    gateway: httpx.Client, route: str, body: bytes
) -> None:
    response = gateway.post(route, content=body, headers={"content-type": "application/json"})

    error = assert_openai_error(response, 400)
    assert error["param"] == "(body)" and error["type"] == "invalid_request_error"


def test_a_lone_surrogate_in_stop_is_a_bad_request_in_the_client_too() -> None:
    import tritonclient.grpc as grpcclient

    with pytest.raises(BadRequestError, match="lone surrogate"):
        build_inputs(grpcclient, "hi", GenerationOptions(stop=("\ud800",)))


@pytest.mark.parametrize("stop", ["\x00", ["ok", "a\x1bb"], "x" * 257])
def test_a_stop_string_with_a_control_character_or_too_long_gets_400(
    gateway: httpx.Client, stop: Any
) -> None:
    response = gateway.post("/v1/chat/completions", json={**CHAT, "stop": stop})

    assert "stop" in assert_openai_error(response, 400)["message"]


def test_a_body_over_the_cap_gets_413_before_it_is_parsed(gateway: httpx.Client) -> None:
    # Not even JSON: a 413, not a 400, shows the cap came before parsing.
    response = gateway.post("/v1/chat/completions", content=b"x" * (64 * 1024 + 1))

    error = assert_openai_error(response, 413)
    assert "inference.max_body_bytes" in error["message"]


def test_a_streamed_body_over_the_cap_gets_413(gateway: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer
        for _ in range(100):
            yield b"y" * 1024

    response = gateway.post("/v1/chat/completions", content=chunks())

    assert_openai_error(response, 413)


def test_a_prompt_over_the_cap_gets_400_before_triton(gateway: httpx.Client) -> None:
    messages = [{"role": "user", "content": "z" * 900}] * 3  # every message is within its cap

    response = gateway.post("/v1/chat/completions", json={**CHAT, "messages": messages})

    error = assert_openai_error(response, 400)
    assert error["param"] == "messages" and "inference.max_prompt_chars" in error["message"]


@pytest.mark.parametrize("conversation_id", ["-starts-with-dash", "a\nb", "x" * 129])
def test_a_conversation_id_the_chat_event_refuses_gets_400_not_500(
    gateway: httpx.Client, conversation_id: str
) -> None:
    response = gateway.post("/v1/chat/completions",
                            json={**CHAT, "conversation_id": conversation_id})

    assert "conversation_id" in assert_openai_error(response, 400)["message"]


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer wrong", "X-API-Key": KEY}, {"X-API-Key": KEY},
])
def test_either_valid_credential_is_enough(gateway: httpx.Client, headers: dict[str, str]) -> None:
    response = httpx.post(gateway.base_url.join("/v1/chat/completions"), json=CHAT, headers=headers,
                          timeout=30)

    assert response.status_code == 503  # past auth: the model is absent


def test_no_valid_credential_gets_401(gateway: httpx.Client) -> None:
    response = httpx.post(gateway.base_url.join("/v1/feedback"), json={}, timeout=30,
                          headers={"Authorization": "Bearer wrong", "X-API-Key": "wrong"})

    assert assert_openai_error(response, 401)["type"] == "authentication_error"


def test_an_unknown_route_and_a_wrong_method_answer_in_openai_shape(
    gateway: httpx.Client,
) -> None:
    assert_openai_error(gateway.post("/v1/nothing", json={}), 404)
    assert_openai_error(gateway.get("/v1/chat/completions"), 405)


@pytest.mark.parametrize("comment", ["a\x00b", "\x1b[2J", "\x7f"])
def test_a_feedback_comment_with_a_control_character_gets_400_and_is_quarantined(
    gateway: httpx.Client, settings: FlywheelSettings, comment: str
) -> None:
    feedback = {"conversation_id": "c-1", "turn_event_id": str(uuid.uuid4()),
                "kind": "thumbs_down", "comment": comment}

    response = gateway.post("/v1/feedback", json=feedback)

    error = assert_openai_error(response, 400)
    assert "comment" in error["message"] and "control character" in error["message"]
    record_id = response.json()["quarantine_id"]
    [record] = [p for p in read_topic(
        settings, QUARANTINE.name, timeout_s=30,
        until=lambda ps: any(str(p.record_id) == record_id for p in ps),
    ) if str(p.record_id) == record_id]
    assert record.topic == "gateway:/v1/feedback" and record.reasons[0].value == "schema_violation"


def test_refusals_are_counted_like_the_ingests(gateway: httpx.Client) -> None:
    gateway.post("/v1/chat/completions", content=b"[" * 300)
    messages = [{"role": "user", "content": "z" * 900}] * 3
    gateway.post("/v1/chat/completions", json={**CHAT, "messages": messages})

    text = gateway.get("/metrics/").text

    assert ('flywheel_ingress_refused_total{code="not_json",route="/v1/chat/completions",'
            'service="gateway",status="400"}') in text
    assert ('flywheel_ingress_refused_total{code="prompt_too_long",'
            'route="/v1/chat/completions",service="gateway",status="400"}') in text
