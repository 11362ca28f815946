"""Fixtures of the inference tests: a tiny GPT-2 + LoRA adapter, models on the test Triton."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from deploy.local.supervisor import Supervisor
from deploy.settings import FlywheelSettings
from inference.repository import ensure_model
from inference.tiny_model import build_tiny_adapter, build_tiny_base


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
