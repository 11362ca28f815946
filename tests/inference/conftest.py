"""Fixtures of the inference tests: a tiny GPT-2 + LoRA adapter, models on the test Triton."""

from __future__ import annotations

import dataclasses
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc as grpcclient
from confluent_kafka import Consumer

from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings
from inference.repository import ensure_model, next_version, write_version
from inference.swap import SwapController
from inference.tiny_model import build_tiny_adapter, build_tiny_base
from schemas import Alert
from schemas.envelope import decode
from streams.topics import TopicSpec, ensure_topics


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_base(tmp_path_factory.mktemp("tiny") / "base")


@pytest.fixture(scope="session")
def tiny_adapter(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_adapter(tiny_base, tmp_path_factory.mktemp("tiny") / "adapter")


@pytest.fixture
def triton(running: Callable[..., Supervisor]) -> Supervisor:
    return running("triton")


@pytest.fixture
def triton_client(
    triton: Supervisor, settings: FlywheelSettings
) -> Iterator[grpcclient.InferenceServerClient]:
    # Closed before the session's down(): an open connection stalls tritonserver's exit.
    with closing(grpcclient.InferenceServerClient(settings.triton.grpc_address)) as client:
        yield client


@pytest.fixture
def chat_model(
    settings: FlywheelSettings, tiny_base: Path,
    triton_client: grpcclient.InferenceServerClient,
) -> Iterator[str]:
    """A chat model (version 1 = tiny base) in the test repository, not loaded yet."""
    repo = settings.triton_model_repository()
    name = f"chat-{uuid.uuid4().hex[:10]}"
    inference = settings.inference
    ensure_model(
        repo, name, base_model=tiny_base, max_batch_size=inference.max_batch_size,
        max_queue_delay_us=inference.max_queue_delay_us, device="cpu",
        torch_threads=inference.torch_threads,
    )
    try:
        yield name
    finally:
        try:
            triton_client.unload_model(name)
        except Exception:  # noqa: BLE001 - best effort: it may never have loaded
            pass
        shutil.rmtree(repo / name, ignore_errors=True)


@pytest.fixture
def kafka(running: Callable[..., Supervisor]) -> Supervisor:
    return running("kafka")


@pytest.fixture
def topic(settings: FlywheelSettings, kafka: Supervisor) -> Callable[[TopicSpec], str]:
    """Create a unique copy of a topic spec; returns its name."""

    def _make(spec: TopicSpec) -> str:
        name = f"{spec.name}.t{uuid.uuid4().hex[:10]}"
        ensure_topics(settings, [dataclasses.replace(spec, name=name)])
        return name

    return _make


def read_topic(
    settings: FlywheelSettings, topic: str, *, until: Callable[[list[Any]], bool],
    timeout_s: float = 30.0,
) -> list[Any]:
    """Decoded payloads of a topic from the start, until `until(payloads)` or the timeout."""
    consumer = Consumer({**settings.kafka.client_config(), "group.id": uuid.uuid4().hex,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    payloads: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not until(payloads):
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                payloads.append(decode(message.value()).payload)
    finally:
        consumer.close()
    return payloads


@pytest.fixture
def swap_settings(settings: FlywheelSettings) -> FlywheelSettings:
    """Test settings with a short drain, so swaps finish quickly."""
    inference = settings.inference.model_copy(
        update={"drain_s": 0.5, "routing_poll_interval_s": 0.1, "device": "cpu"}
    )
    return settings.model_copy(update={"inference": inference})


@pytest.fixture
def controller(
    swap_settings: FlywheelSettings, chat_model: str, tiny_base: Path
) -> SwapController:
    """A started controller of `chat_model` (version 1 live) recording its alerts."""
    alerts: list[Alert] = []
    ctl = SwapController(swap_settings, model=chat_model, alert_sink=alerts.append)
    ctl.alerts = alerts  # type: ignore[attr-defined]
    ctl.start(base_model=tiny_base)
    return ctl


def add_adapter_version(
    settings: FlywheelSettings, model: str, base: Path, adapter: Path, *, adapter_id: str
) -> int:
    repo = settings.triton_model_repository()
    version = next_version(repo, model)
    write_version(repo, model, version, adapter_dir=adapter,
                  metadata={"base_model": str(base), "adapter_id": adapter_id})
    return version
