"""The local Triton Inference Server: ready, loads a Python-backend model, swaps versions."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings
from tests.deploy.local.polling import wait_for

pytestmark = pytest.mark.integration

ECHO_MODEL = Path(__file__).parent / "models" / "echo_upper"


@pytest.fixture
def triton(running: Callable[..., Supervisor]) -> Supervisor:
    return running("triton")


@pytest.fixture
def client(
    triton: Supervisor, settings: FlywheelSettings
) -> Iterator[grpcclient.InferenceServerClient]:
    # Closed before the session's down(): an open connection makes tritonserver wait
    # out its whole exit timeout.
    with closing(grpcclient.InferenceServerClient(settings.triton.grpc_address)) as c:
        yield c


@pytest.fixture
def echo_model(
    settings: FlywheelSettings, unique_name: str, client: grpcclient.InferenceServerClient
) -> Iterator[str]:
    """The echo model copied into the test stack's repository under a unique name."""
    target = settings.triton_model_repository() / unique_name
    shutil.copytree(ECHO_MODEL, target, ignore=shutil.ignore_patterns("__pycache__"))
    try:
        yield unique_name
    finally:
        if client.is_model_ready(unique_name):
            client.unload_model(unique_name)
        shutil.rmtree(target, ignore_errors=True)


def ask(
    client: grpcclient.InferenceServerClient, model: str, texts: list[str]
) -> tuple[list[str], str]:
    """Send texts to the echo model; return its upper-cased texts and the version that answered."""
    text = grpcclient.InferInput("TEXT", [len(texts)], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
    outputs = [grpcclient.InferRequestedOutput(name) for name in ("UPPER", "VERSION")]
    result = client.infer(model, [text], outputs=outputs)
    upper = [u.decode() for u in result.as_numpy("UPPER")]
    return upper, result.as_numpy("VERSION")[0].decode()


def test_triton_reports_ready_on_its_http_health_endpoint(triton: Supervisor) -> None:
    health = triton.get("triton").check_health()

    assert health.healthy, health.detail


def test_python_backend_model_loads_over_grpc_and_answers(
    client: grpcclient.InferenceServerClient, echo_model: str
) -> None:
    client.load_model(echo_model)

    upper, version = ask(client, echo_model, ["hello triton", "ünïcode"])

    assert upper == ["HELLO TRITON", "ÜNÏCODE"]
    assert version == "1"


def test_loading_a_second_version_folder_switches_traffic_to_it(
    client: grpcclient.InferenceServerClient, echo_model: str, settings: FlywheelSettings
) -> None:
    client.load_model(echo_model)
    assert ask(client, echo_model, ["before"])[1] == "1"
    model_dir = settings.triton_model_repository() / echo_model
    shutil.copytree(model_dir / "1", model_dir / "2", ignore=shutil.ignore_patterns("__pycache__"))

    client.load_model(echo_model)

    assert ask(client, echo_model, ["after"]) == (["AFTER"], "2")
    assert client.is_model_ready(echo_model, "2")
    assert wait_for(lambda: not client.is_model_ready(echo_model, "1"), timeout_s=30)

