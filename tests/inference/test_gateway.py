"""The OpenAI-compatible gateway: answers, events in Kafka, feedback, 400/401/503."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest
import tritonclient.grpc as grpcclient

from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings
from inference.gateway.server import free_port, gateway_in_thread
from inference.swap import SwapController
from schemas import ChatEvent, FeedbackEvent
from streams.topics import CHAT_EVENTS, FEEDBACK_EVENTS, TopicSpec
from tests.inference.conftest import read_topic

pytestmark = pytest.mark.integration

KEY = {"Authorization": "Bearer flywheel-dev-key"}


@pytest.fixture(scope="module")
def served(
    running: Callable[..., Supervisor], settings: FlywheelSettings, tiny_base: Path
) -> Iterator[SwapController]:
    """One model (version 1 live) shared by this module's tests: loads cost seconds."""
    running("triton", "kafka")
    inference = settings.inference.model_copy(update={"device": "cpu"})
    shared = settings.model_copy(update={"inference": inference})
    ctl = SwapController(shared, model=f"gw-{uuid.uuid4().hex[:10]}")
    ctl.start(base_model=tiny_base)
    try:
        yield ctl
    finally:
        with closing(grpcclient.InferenceServerClient(settings.triton.grpc_address)) as c:
            c.unload_model(ctl.model)
        shutil.rmtree(ctl.repo / ctl.model, ignore_errors=True)


@pytest.fixture
def controller(served: SwapController) -> SwapController:
    return served


@pytest.fixture
def topics(topic: Callable[[TopicSpec], str]) -> dict[str, str]:
    return {"chat_topic": topic(CHAT_EVENTS), "feedback_topic": topic(FEEDBACK_EVENTS)}


@pytest.fixture
def gateway(
    swap_settings: FlywheelSettings, controller: SwapController, topics: dict[str, str]
) -> Iterator[httpx.Client]:
    with gateway_in_thread(swap_settings, model=controller.model, **topics) as url, \
            httpx.Client(base_url=url, headers=KEY, timeout=30) as http:
        yield http


def test_a_chat_completion_answers_in_openai_shape_and_lands_in_kafka_with_its_version(
    gateway: httpx.Client, swap_settings: FlywheelSettings, topics: dict[str, str],
    controller: SwapController,
) -> None:
    response = gateway.post("/v1/chat/completions", json={
        "model": controller.model, "conversation_id": "conv-1", "max_tokens": 5,
        "metadata": {"topic": "greetings"},
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "hello there"}]})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"]["completion_tokens"] <= 5
    assert body["flywheel"]["version"] == 1
    events = read_topic(swap_settings, topics["chat_topic"], until=lambda e: len(e) >= 2)
    by_role = {e.role: e for e in events if isinstance(e, ChatEvent)}
    assert by_role["user"].text == "hello there" and by_role["user"].turn_index == 1
    answer = by_role["assistant"]
    assert (answer.conversation_id, answer.model, answer.model_version) == (
        "conv-1", controller.model, "base")
    assert str(answer.event_id) == body["flywheel"]["turn_event_id"]
    assert by_role["user"].metadata == {"topic": "greetings"}
    assert answer.metadata["topic"] == "greetings"
    assert answer.completion_tokens == body["usage"]["completion_tokens"]


def test_feedback_on_an_answer_lands_in_kafka(
    gateway: httpx.Client, swap_settings: FlywheelSettings, topics: dict[str, str]
) -> None:
    answer = gateway.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}).json()

    response = gateway.post("/v1/feedback", json={
        "conversation_id": answer["flywheel"]["conversation_id"],
        "turn_event_id": answer["flywheel"]["turn_event_id"], "kind": "rating", "rating": 2})

    assert response.status_code == 202, response.text
    events = read_topic(swap_settings, topics["feedback_topic"], until=lambda e: len(e) >= 1)
    assert isinstance(events[0], FeedbackEvent) and events[0].rating == 2


def test_streaming_returns_chunks_and_done(gateway: httpx.Client) -> None:
    response = gateway.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True})

    lines = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert response.status_code == 200
    assert lines[-1] == "data: [DONE]" and len(lines) == 3


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "role `user`"),
        ({"messages": [{"role": "user", "content": "  "}]}, "empty"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": 5}, "temperature"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": "many"}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "word " * 400}]}, "context"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "role"),
        ({"messages": [{"role": "user", "content": "hi\x11"}]}, "control character U+0011"),
        ({"messages": [{"role": "user", "content": "hi"}], "metadata": {"bad key!": "x"}},
         "metadata key 'bad key!'"),
        ({"messages": [{"role": "user", "content": "hi"}], "metadata": {"topic": "x" * 600}},
         "at most 512"),
    ],
)
def test_bad_requests_get_400_with_a_message(
    gateway: httpx.Client, body: dict[str, object], message: str
) -> None:
    response = gateway.post("/v1/chat/completions", json=body)

    assert response.status_code == 400
    assert message in response.json()["error"]["message"]


def test_a_body_that_is_not_json_gets_400(gateway: httpx.Client) -> None:
    response = gateway.post("/v1/chat/completions", content=b"{nope",
                            headers={"content-type": "application/json"})

    assert response.status_code == 400 and "JSON" in response.json()["error"]["message"]


def test_a_missing_api_key_gets_401(gateway: httpx.Client) -> None:
    response = gateway.post("/v1/chat/completions", headers={"Authorization": "Bearer wrong"},
                            json={"messages": [{"role": "user", "content": "hi"}]})

    assert response.status_code == 401


def test_triton_down_gets_503_with_retry_after(
    swap_settings: FlywheelSettings, topics: dict[str, str], tmp_path: object
) -> None:
    dead = swap_settings.triton.model_copy(update={"grpc_port": free_port()})
    settings = swap_settings.model_copy(update={"triton": dead})
    with gateway_in_thread(settings, model="nobody-home", **topics) as url:
        response = httpx.post(f"{url}/v1/chat/completions", headers=KEY, timeout=30,
                              json={"messages": [{"role": "user", "content": "hi"}]})

    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(settings.inference.retry_after_s)
