"""The Triton chat model: versions switch in place and generate; bad requests get clear errors."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from deploy.settings import FlywheelSettings
from inference.client import (
    ControlRefusedError,
    GenerationOptions,
    TritonChat,
    VersionUnavailableError,
)
from inference.errors import BadRequestError
from inference.repository import next_version, write_version

pytestmark = pytest.mark.integration


def test_base_version_generates_with_token_counts(
    settings: FlywheelSettings, chat_model: str, triton_client: grpcclient.InferenceServerClient
) -> None:
    triton_client.load_model(chat_model)

    with TritonChat(settings.triton.grpc_address, model=chat_model) as chat:
        answer = chat.complete("user: hello there", version=1,
                               options=GenerationOptions(max_new_tokens=6))

    assert answer.adapter_id == "base"
    assert answer.prompt_tokens > 0
    assert 1 <= answer.completion_tokens <= 6
    assert answer.finish_reason in ("stop", "length")


def test_an_adapter_version_is_switched_in_place_and_answers_differently(
    settings: FlywheelSettings, chat_model: str, tiny_base: Path, tiny_adapter: Path,
    triton_client: grpcclient.InferenceServerClient,
) -> None:
    repo = settings.triton_model_repository()
    triton_client.load_model(chat_model)
    version = next_version(repo, chat_model)
    write_version(repo, chat_model, version, adapter_dir=tiny_adapter,
                  metadata={"base_model": str(tiny_base), "adapter_id": "adapter-a"})

    options = GenerationOptions(max_new_tokens=8)
    with TritonChat(settings.triton.grpc_address, model=chat_model) as chat:
        base = chat.complete("user: my laptop", options=options)
        state = chat.control("activate", version=version)
        tuned = chat.complete("user: my laptop", options=options)
        back = chat.control("activate", version=1)
        again = chat.complete("user: my laptop", options=options)

    assert (state["version"], state["adapter_id"]) == (version, "adapter-a")
    assert (base.version, base.adapter_id) == (1, "base")
    assert (tuned.version, tuned.adapter_id) == (version, "adapter-a")
    assert base.text != tuned.text
    assert back["version"] == 1 and again.text == base.text
    metrics = httpx.get(settings.triton.metrics_address, timeout=10).text
    for answered_by in ("1", str(version)):
        assert f'flywheel_model_request_success{{model="{chat_model}",version="{answered_by}"}}' \
            in metrics
    assert [v["state"] for v in triton_client.get_model_repository_index(as_json=True)["models"]
            if v["name"] == chat_model] == ["READY"]  # no second version was loaded


def test_activating_a_corrupt_adapter_is_refused_and_the_active_version_serves_on(
    settings: FlywheelSettings, chat_model: str, tiny_base: Path, tiny_adapter: Path,
    triton_client: grpcclient.InferenceServerClient,
) -> None:
    repo = settings.triton_model_repository()
    triton_client.load_model(chat_model)
    version = next_version(repo, chat_model)
    folder = write_version(repo, chat_model, version, adapter_dir=tiny_adapter,
                           metadata={"base_model": str(tiny_base), "adapter_id": "adapter-bad"})
    (folder / "adapter" / "adapter_model.safetensors").write_bytes(b"tampered")

    with TritonChat(settings.triton.grpc_address, model=chat_model) as chat:
        with pytest.raises(ControlRefusedError, match="sha256"):
            chat.control("activate", version=version)
        answer = chat.complete("user: still there?", version=1)

    assert (answer.version, answer.adapter_id) == (1, "base")


def test_a_request_for_a_version_that_is_not_active_is_refused(
    settings: FlywheelSettings, chat_model: str, triton_client: grpcclient.InferenceServerClient
) -> None:
    triton_client.load_model(chat_model)
    with TritonChat(settings.triton.grpc_address, model=chat_model) as chat:
        with pytest.raises(VersionUnavailableError, match="not active"):
            chat.complete("user: hi", version=5)


def test_a_control_request_that_is_not_json_gets_a_bad_request_error(
    chat_model: str, triton_client: grpcclient.InferenceServerClient
) -> None:
    triton_client.load_model(chat_model)
    control = grpcclient.InferInput("control", [1, 1], "BYTES")
    control.set_data_from_numpy(np.array([[b"activate 2"]], dtype=np.object_))

    with pytest.raises(Exception, match="control must be JSON"):
        triton_client.infer(chat_model, [control])


def test_concurrent_requests_with_mixed_options_all_get_answers(
    settings: FlywheelSettings, chat_model: str, triton_client: grpcclient.InferenceServerClient
) -> None:
    triton_client.load_model(chat_model)
    cases = [GenerationOptions(max_new_tokens=n, temperature=t, top_p=0.9)
             for n in (3, 5) for t in (0.0, 0.8)] * 3

    with TritonChat(settings.triton.grpc_address, model=chat_model) as chat, \
            ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(
            lambda o: chat.complete("user: tell me a joke", version=1, options=o), cases
        ))

    assert [a.completion_tokens <= o.max_new_tokens for a, o in zip(answers, cases, strict=True)]
    assert all(a.completion_tokens >= 1 for a in answers)


def test_stop_sequences_cut_the_answer(
    settings: FlywheelSettings, chat_model: str, triton_client: grpcclient.InferenceServerClient
) -> None:
    triton_client.load_model(chat_model)
    with TritonChat(settings.triton.grpc_address, model=chat_model) as chat:
        full = chat.complete("user: hello", version=1, options=GenerationOptions(max_new_tokens=12))
        stop = full.text[3:6]
        cut = chat.complete("user: hello", version=1,
                            options=GenerationOptions(max_new_tokens=12, stop=(stop,)))

    assert cut.text == full.text[: full.text.find(stop)]
    assert cut.finish_reason == "stop"


@pytest.mark.parametrize(
    ("prompt", "options", "message"),
    [
        ("   ", GenerationOptions(), "prompt is empty"),
        ("word " * 400, GenerationOptions(), "over the model's context"),
        ("hi", GenerationOptions(max_new_tokens=0), "max_new_tokens must be"),
        ("hi", GenerationOptions(top_p=0.0), "top_p must be"),
        ("hi", GenerationOptions(temperature=9.0), "temperature must be"),
    ],
)
def test_bad_requests_get_a_clear_error_and_the_instance_keeps_serving(
    settings: FlywheelSettings, chat_model: str, triton_client: grpcclient.InferenceServerClient,
    prompt: str, options: GenerationOptions, message: str,
) -> None:
    triton_client.load_model(chat_model)
    with TritonChat(settings.triton.grpc_address, model=chat_model) as chat:
        with pytest.raises(BadRequestError, match=message):
            chat.complete(prompt, version=1, options=options)
        assert chat.complete("user: hi", version=1).completion_tokens >= 1


def test_a_prompt_of_the_wrong_type_is_refused_by_triton(
    chat_model: str, triton_client: grpcclient.InferenceServerClient
) -> None:
    triton_client.load_model(chat_model)
    wrong = grpcclient.InferInput("prompt", [1, 1], "INT32")
    wrong.set_data_from_numpy(np.array([[7]], dtype=np.int32))

    with pytest.raises(Exception, match="data-type is .INT32."):
        triton_client.infer(chat_model, [wrong], model_version="1")
