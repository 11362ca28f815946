"""Canary on the real stack: a second Triton model takes a share of gateway traffic and is
promoted or rolled back on the figures the gateway exports."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import tritonclient.grpc as grpcclient

from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings
from inference.canary import GatewayStats, Verdict
from inference.canary_model import canary_model_name
from inference.controller import run_canary, run_controller
from inference.events import ModelPublishedProducer
from inference.gateway.server import free_port, gateway_in_thread
from inference.repository import adapter_sha256, next_version
from inference.routing import read_routing
from inference.swap import ALERT_CANARY_ROLLED_BACK, SwapController
from schemas import Alert, DatasetSnapshot, ModelPublished
from streams.topics import ALERTS, CHAT_EVENTS, FEEDBACK_EVENTS, MODELS_PUBLISHED, TopicSpec
from tests.inference.conftest import add_adapter_version

pytestmark = pytest.mark.integration

KEY = {"Authorization": "Bearer flywheel-dev-key"}
ASK = {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 4}


@pytest.fixture(scope="module")
def served(
    running: Callable[..., Supervisor], settings: FlywheelSettings, tiny_base: Path
) -> Iterator[SwapController]:
    """One model for the module (loads cost seconds), version 1 live at first."""
    running("triton", "kafka")
    inference = settings.inference.model_copy(update={
        "device": "cpu", "drain_s": 0.5, "routing_poll_interval_s": 0.1,
        "canary_share": 0.5, "canary_min_requests": 6, "canary_window_s": 4.0,
        # Both versions are the same tiny network on a shared CPU: latency is no signal here
        # (the p99 rule is covered by test_canary_judge).
        "canary_max_p99_ratio": 100.0, "canary_max_negative_feedback_rate": 0.5,
    })
    shared = settings.model_copy(update={"inference": inference})
    alerts: list[Alert] = []
    ctl = SwapController(shared, model=f"canary-{uuid.uuid4().hex[:10]}",
                         alert_sink=alerts.append)
    ctl.alerts = alerts  # type: ignore[attr-defined]
    ctl.start(base_model=tiny_base)
    try:
        yield ctl
    finally:
        with closing(grpcclient.InferenceServerClient(settings.triton.grpc_address)) as c:
            for name in (ctl.model, canary_model_name(ctl.model)):
                try:
                    c.unload_model(name)
                except Exception:  # noqa: BLE001 - the canary may not be loaded
                    pass
        for name in (ctl.model, canary_model_name(ctl.model)):
            shutil.rmtree(ctl.repo / name, ignore_errors=True)


@pytest.fixture
def controller(served: SwapController) -> SwapController:
    served.alerts.clear()  # type: ignore[attr-defined]
    return served


@pytest.fixture
def gateway(
    controller: SwapController, topic: Callable[[TopicSpec], str]
) -> Iterator[str]:
    with gateway_in_thread(controller.settings, model=controller.model,
                           chat_topic=topic(CHAT_EVENTS),
                           feedback_topic=topic(FEEDBACK_EVENTS)) as url:
        yield url


def canary_under_traffic(
    controller: SwapController, url: str, version: int, *, rate: Callable[[int], str | None]
) -> tuple[Verdict, Counter[int]]:
    """Run the canary of `version` while a client asks and rates each answer by version."""
    result: list[Verdict] = []
    stats = GatewayStats([f"{url}/metrics"], model=controller.model)
    runner = threading.Thread(target=lambda: result.append(
        run_canary(controller, version, stats=stats, poll_s=0.3)))
    runner.start()
    answered: Counter[int] = Counter()
    with httpx.Client(base_url=url, headers=KEY, timeout=30) as http:
        while runner.is_alive():
            body = http.post("/v1/chat/completions", json=ASK).json()
            answered[body["flywheel"]["version"]] += 1
            kind = rate(body["flywheel"]["version"])
            if kind is not None:
                http.post("/v1/feedback", json={
                    "conversation_id": body["flywheel"]["conversation_id"],
                    "turn_event_id": body["flywheel"]["turn_event_id"], "kind": kind,
                }).raise_for_status()
    runner.join()
    return result[0], answered


def canary_loaded(controller: SwapController) -> bool:
    with closing(grpcclient.InferenceServerClient(
            controller.settings.triton.grpc_address)) as c:
        return bool(c.is_model_ready(canary_model_name(controller.model)))


def test_a_canary_with_bad_feedback_is_rolled_back_and_the_live_version_keeps_serving(
    controller: SwapController, gateway: str, tiny_base: Path, tiny_adapter: Path,
) -> None:
    version = add_adapter_version(controller.settings, controller.model, tiny_base,
                                  tiny_adapter, adapter_id="adapter-disliked")

    verdict, answered = canary_under_traffic(
        controller, gateway, version,
        rate=lambda v: "thumbs_down" if v == version else "thumbs_up")

    assert verdict.decision == "rollback" and "negative feedback" in verdict.reason
    assert answered[1] > 0 and answered[version] > 0
    routing = read_routing(controller.repo, controller.model)
    assert routing is not None and (routing.live, routing.canary) == (1, None)
    assert [a.name for a in controller.alerts] == [ALERT_CANARY_ROLLED_BACK]  # type: ignore[attr-defined]
    assert not canary_loaded(controller)
    with httpx.Client(base_url=gateway, headers=KEY, timeout=30) as http:
        after = {http.post("/v1/chat/completions", json=ASK).json()["flywheel"]["version"]
                 for _ in range(4)}
    assert after == {1}


def test_a_healthy_canary_is_promoted_after_its_window(
    controller: SwapController, gateway: str, tiny_base: Path, tiny_adapter: Path,
) -> None:
    live = read_routing(controller.repo, controller.model).live  # type: ignore[union-attr]
    version = add_adapter_version(controller.settings, controller.model, tiny_base,
                                  tiny_adapter, adapter_id="adapter-liked")

    verdict, answered = canary_under_traffic(controller, gateway, version,
                                             rate=lambda _v: "thumbs_up")

    assert verdict.decision == "promote", verdict.reason
    assert answered[live] > 0 and answered[version] > 0
    routing = read_routing(controller.repo, controller.model)
    assert routing is not None and (routing.live, routing.previous, routing.canary) == (
        version, live, None)
    assert controller.alerts == []  # type: ignore[attr-defined]
    assert not canary_loaded(controller)
    with httpx.Client(base_url=gateway, headers=KEY, timeout=30) as http:
        answer = http.post("/v1/chat/completions", json=ASK).json()
    assert answer["flywheel"]["version"] == version


def test_rollback_by_hand_drops_a_running_canary_and_keeps_the_live_version(
    controller: SwapController, tiny_base: Path, tiny_adapter: Path,
) -> None:
    live = read_routing(controller.repo, controller.model).live  # type: ignore[union-attr]
    version = add_adapter_version(controller.settings, controller.model, tiny_base,
                                  tiny_adapter, adapter_id="adapter-by-hand")
    controller.start_canary(version, share=0.2)
    assert canary_loaded(controller)

    result = controller.rollback()

    assert (result.previous, result.live) == (version, live)
    routing = read_routing(controller.repo, controller.model)
    assert routing is not None and (routing.live, routing.canary) == (live, None)
    assert not canary_loaded(controller)


def test_the_controller_runs_a_published_version_as_a_canary_then_promotes_it(
    controller: SwapController, tiny_base: Path, tiny_adapter: Path,
    topic: Callable[[TopicSpec], str],
) -> None:
    port = free_port()
    settings = controller.settings.model_copy(update={
        "inference": controller.settings.inference.model_copy(update={"gateway_port": port})})
    live = read_routing(controller.repo, controller.model).live  # type: ignore[union-attr]
    version = next_version(controller.repo, controller.model)
    published_topic = topic(MODELS_PUBLISHED)
    stop = threading.Event()
    runner = threading.Thread(target=run_controller, args=(settings,), kwargs={
        "stop": stop, "model": controller.model, "topic": published_topic,
        "alerts_topic": topic(ALERTS)})
    seen: Counter[int] = Counter()
    with gateway_in_thread(settings, port=port, model=controller.model,
                           chat_topic=topic(CHAT_EVENTS),
                           feedback_topic=topic(FEEDBACK_EVENTS)) as url:
        runner.start()
        try:
            with ModelPublishedProducer(settings.kafka, producer_name="test",
                                        topic=published_topic) as producer:
                producer.publish(published(controller.model, version, tiny_base, tiny_adapter,
                                           previous=live))
            with httpx.Client(base_url=url, headers=KEY, timeout=30) as http:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    body = http.post("/v1/chat/completions", json=ASK).json()
                    seen[body["flywheel"]["version"]] += 1
                    routing = read_routing(controller.repo, controller.model)
                    if routing is not None and routing.live == version:
                        break
        finally:
            stop.set()
            runner.join(60)

    routing = read_routing(controller.repo, controller.model)
    assert routing is not None and (routing.live, routing.canary) == (version, None)
    assert seen[live] > 0 and seen[version] > 0  # the canary answered its share first
    assert not canary_loaded(controller)


def published(model: str, version: int, base: Path, adapter: Path, *, previous: int
              ) -> ModelPublished:
    return ModelPublished(
        model=model, version=version, adapter_id=f"adapter-v{version}", base_model=str(base),
        adapter_uri=str(adapter), adapter_sha256=adapter_sha256(adapter),
        previous_version=previous,
        dataset=DatasetSnapshot(window_start=datetime(2026, 1, 1, tzinfo=UTC),
                                window_end=datetime(2026, 1, 2, tzinfo=UTC), query="select 1",
                                train_rows=1, validation_rows=1, content_sha256="0" * 64),
    )


def test_a_restarted_controller_drops_the_canary_it_left(
    controller: SwapController, tiny_base: Path, tiny_adapter: Path,
) -> None:
    live = read_routing(controller.repo, controller.model).live  # type: ignore[union-attr]
    version = add_adapter_version(controller.settings, controller.model, tiny_base,
                                  tiny_adapter, adapter_id="adapter-orphan")
    controller.start_canary(version, share=0.2)

    SwapController(controller.settings, model=controller.model).start()

    routing = read_routing(controller.repo, controller.model)
    assert routing is not None and (routing.live, routing.canary) == (live, None)
    assert not canary_loaded(controller)
