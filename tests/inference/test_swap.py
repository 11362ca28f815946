"""Hot swap: zero failed requests under load, failed loads never switched to, rollback."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import httpx
import pytest
import tritonclient.grpc as grpcclient

from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings
from inference.client import TritonChat
from inference.errors import SwapError
from inference.gateway.server import gateway_in_thread
from inference.repository import (
    ensure_model,
    read_active_version,
    read_metadata,
    version_dir,
)
from inference.routing import read_routing
from inference.swap import SwapController
from schemas import Alert
from streams.topics import CHAT_EVENTS
from tests.inference.conftest import add_adapter_version

pytestmark = pytest.mark.integration

KEY = {"Authorization": "Bearer flywheel-dev-key"}
ASK = {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 6}


@pytest.fixture(scope="module")
def served(
    running: Callable[..., Supervisor], settings: FlywheelSettings, tiny_base: Path
) -> Iterator[SwapController]:
    """One model shared by this module, in order: swap, rollback, then the failed loads.

    Shared because after a failed version load Triton's /v2/health/ready answers 400
    (strict readiness), and the stack's health check would then refuse to hand out Triton
    to later tests; the failure tests therefore run last, on the model already served.
    """
    running("triton", "kafka")
    inference = settings.inference.model_copy(
        update={"drain_s": 0.5, "routing_poll_interval_s": 0.1, "device": "cpu"})
    shared = settings.model_copy(update={"inference": inference})
    alerts: list[Alert] = []
    ctl = SwapController(shared, model=f"swap-{uuid.uuid4().hex[:10]}",
                         alert_sink=alerts.append)
    ctl.alerts = alerts  # type: ignore[attr-defined]
    ctl.start(base_model=tiny_base)
    try:
        yield ctl
    finally:
        with closing(grpcclient.InferenceServerClient(settings.triton.grpc_address)) as c:
            c.unload_model(ctl.model)
        shutil.rmtree(ctl.repo / ctl.model, ignore_errors=True)


@pytest.fixture
def controller(served: SwapController) -> SwapController:
    served.alerts.clear()  # type: ignore[attr-defined]
    return served


def test_a_swap_under_load_fails_no_request_and_moves_traffic_to_the_new_version(
    swap_settings: FlywheelSettings, controller: SwapController, tiny_base: Path,
    tiny_adapter: Path, topic: object,
) -> None:
    version = add_adapter_version(swap_settings, controller.model, tiny_base, tiny_adapter,
                                  adapter_id="adapter-swap")
    stop = threading.Event()
    answered: Counter[str] = Counter()
    failures: list[str] = []

    with gateway_in_thread(swap_settings, model=controller.model,
                           chat_topic=topic(CHAT_EVENTS)) as url:  # type: ignore[operator]
        def client_loop() -> None:
            with httpx.Client(base_url=url, headers=KEY, timeout=30) as http:
                while not stop.is_set():
                    response = http.post("/v1/chat/completions", json=ASK)
                    if response.status_code == 200:
                        answered[response.json()["system_fingerprint"]] += 1
                    else:
                        failures.append(f"{response.status_code} {response.text}")

        threads = [threading.Thread(target=client_loop) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            # The in-place switch takes milliseconds: let the base answer under load first.
            deadline = time.monotonic() + 60
            while answered["base"] < 8 and not failures and time.monotonic() < deadline:
                time.sleep(0.05)
            result = controller.deploy(version)
            with httpx.Client(base_url=url, headers=KEY, timeout=30) as http:
                after = [http.post("/v1/chat/completions", json=ASK).json() for _ in range(3)]
        finally:
            stop.set()
            for t in threads:
                t.join()

    assert failures == []
    assert answered["base"] > 0 and answered["adapter-swap"] > 0
    assert {a["flywheel"]["version"] for a in after} == {version}
    assert result.previous == 1 and result.live == version
    assert read_routing(controller.repo, controller.model).previous == 1  # type: ignore[union-attr]
    controller.rollback()


def test_rollback_restores_the_previous_version(
    controller: SwapController, swap_settings: FlywheelSettings, tiny_base: Path,
    tiny_adapter: Path,
) -> None:
    version = add_adapter_version(swap_settings, controller.model, tiny_base, tiny_adapter,
                                  adapter_id="adapter-rb")
    controller.deploy(version)

    result = controller.rollback()

    routing = read_routing(controller.repo, controller.model)
    assert routing is not None and (routing.live, routing.previous) == (1, None)
    assert (result.previous, result.live) == (version, 1)
    with TritonChat(swap_settings.triton.grpc_address, model=controller.model) as chat:
        assert chat.complete("user: hi", version=1).adapter_id == "base"
    rows = {r["version"]: r for r in controller.status()}
    assert rows[1]["role"] == "live" and rows[version]["triton_state"] != "READY"
    assert read_metadata(controller.repo, controller.model, version)["adapter_id"] == "adapter-rb"


def test_every_instance_of_a_model_follows_a_switch_made_through_one_of_them(
    swap_settings: FlywheelSettings, tiny_base: Path, tiny_adapter: Path,
    triton_client: grpcclient.InferenceServerClient,
) -> None:
    name = f"swap2-{uuid.uuid4().hex[:10]}"
    repo = swap_settings.triton_model_repository()
    ensure_model(repo, name, base_model=tiny_base, instance_count=2, device="cpu")
    controller = SwapController(swap_settings, model=name)
    try:
        controller.start(base_model=tiny_base)
        version = add_adapter_version(swap_settings, name, tiny_base, tiny_adapter,
                                      adapter_id="adapter-both")

        controller.deploy(version)  # the control request reaches one of the two instances

        with TritonChat(swap_settings.triton.grpc_address, model=name) as chat, \
                ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: chat.complete("user: hi"), range(24)))
        assert {(a.version, a.adapter_id) for a in answers} == {(version, "adapter-both")}
        assert read_active_version(repo, name) == version
    finally:
        triton_client.unload_model(name)
        shutil.rmtree(repo / name, ignore_errors=True)


def test_a_version_that_fails_to_load_raises_and_keeps_the_live_one(
    controller: SwapController, swap_settings: FlywheelSettings, tiny_base: Path,
    tiny_adapter: Path,
) -> None:
    version = add_adapter_version(swap_settings, controller.model, tiny_base, tiny_adapter,
                                  adapter_id="adapter-broken")
    weights = version_dir(controller.repo, controller.model, version) / "adapter"
    (weights / "adapter_model.safetensors").write_bytes(b"tampered")

    with pytest.raises(SwapError, match="version 1 keeps serving"):
        controller.deploy(version)

    assert read_routing(controller.repo, controller.model).live == 1  # type: ignore[union-attr]
    assert [a.labels["version"] for a in controller.alerts] == [str(version)]  # type: ignore[attr-defined]
    with TritonChat(swap_settings.triton.grpc_address, model=controller.model) as chat:
        assert chat.complete("user: hi", version=1).adapter_id == "base"


# A corrupt adapter published through Kafka, refused, alerted through Alertmanager into the
# alerts table and recorded `refused`: tests/monitoring/test_swap_alert.py.
