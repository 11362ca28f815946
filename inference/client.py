"""Calling the chat model on Triton over gRPC (sync for tools, asyncio for the gateway).

A request names no Triton model version: the model switches adapters in place, and its
`version` output says which version answered (`Completion.version`). Asking for a
version sends `expect_version`, which the model refuses unless that version is active.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from inference.errors import BadRequestError, InferenceError, TritonUnavailableError

OUTPUTS = ("text", "prompt_tokens", "completion_tokens", "finish_reason", "adapter_id",
           "version")
#: How the model prefixes a refused control request (see triton_model/model.py).
CONTROL_REFUSED = "control refused:"


class VersionUnavailableError(TritonUnavailableError):
    """The requested version is not active (it was just swapped out); reread routing."""


class ControlRefusedError(InferenceError):
    """The model refused to activate a version; the one it served before keeps serving."""


@dataclass(frozen=True)
class GenerationOptions:
    """What a caller may set per request."""

    max_new_tokens: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Completion:
    """One answer of the model and who gave it."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    adapter_id: str
    version: int
    latency_ms: float


def _utf8(text: str, *, name: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError as e:  # a lone surrogate: no UTF-8 form, so no model input
        raise BadRequestError(
            f"{name} has a lone surrogate (U+{ord(text[e.start]):04X} at position {e.start}), "
            "which is not text; send valid Unicode") from e


def build_inputs(
    module: Any, prompt: str, options: GenerationOptions, *, version: int | None = None
) -> list[Any]:
    """Triton inputs for one request (batch of 1), for `tritonclient.grpc` or `.http`.

    Raises:
        BadRequestError: the prompt or a stop string is not valid Unicode.
    """

    def tensor(name: str, value: np.ndarray[Any, Any], dtype: str) -> Any:
        item = module.InferInput(name, list(value.shape), dtype)
        item.set_data_from_numpy(value)
        return item

    inputs = [
        tensor("prompt", np.array([[_utf8(prompt, name="the prompt")]], dtype=np.object_),
               "BYTES"),
        tensor("max_new_tokens", np.array([[options.max_new_tokens]], dtype=np.int32), "INT32"),
        tensor("temperature", np.array([[options.temperature]], dtype=np.float32), "FP32"),
        tensor("top_p", np.array([[options.top_p]], dtype=np.float32), "FP32"),
    ]
    if options.stop:
        stops = np.array([[_utf8(s, name="a stop string") for s in options.stop]],
                         dtype=np.object_)
        inputs.append(tensor("stop", stops, "BYTES"))
    if version:
        inputs.append(tensor("expect_version", np.array([[version]], dtype=np.int32), "INT32"))
    return inputs


def parse_result(result: Any, *, version: int | None, started_s: float) -> Completion:
    """A Completion from an InferResult, tagged with the version the model says answered."""

    def first(name: str) -> Any:
        return result.as_numpy(name).reshape(-1)[0]

    return Completion(
        text=first("text").decode(), prompt_tokens=int(first("prompt_tokens")),
        completion_tokens=int(first("completion_tokens")),
        finish_reason=first("finish_reason").decode(), adapter_id=first("adapter_id").decode(),
        version=int(first("version")), latency_ms=(time.perf_counter() - started_s) * 1000,
    )


def translate(
    error: InferenceServerException, *, model: str, version: int | None
) -> InferenceError:
    """Map a Triton error to Flywheel's: bad request, version gone, or server unavailable."""
    message = error.message() or str(error)
    status = str(error.status() or "")
    if CONTROL_REFUSED in message:
        return ControlRefusedError(message.split(CONTROL_REFUSED, 1)[-1].strip())
    if "is not active on this instance" in message:
        return VersionUnavailableError(f"version {version} of {model} is not active: {message}")
    if "bad request:" in message:
        return BadRequestError(message.split("bad request:", 1)[-1].strip())
    if "INVALID_ARGUMENT" in status and "ready state" not in message:
        return BadRequestError(message)
    if "is not at ready state" in message or "unknown model" in message.lower():
        return VersionUnavailableError(
            f"version {version} of {model} is not loaded on Triton: {message}"
        )
    if "UNAVAILABLE" in status or "failed to connect" in message.lower():
        return TritonUnavailableError(f"Triton is unreachable ({message}); is it running?")
    return InferenceError(f"Triton failed on {model} version {version}: {message}")


class TritonChat:
    """Synchronous gRPC client; close it (or use `with`) before Triton stops."""

    def __init__(self, grpc_address: str, *, model: str, timeout_s: float = 30.0) -> None:
        self._address = grpc_address
        self.model = model
        self._timeout_s = timeout_s
        self._client: grpcclient.InferenceServerClient | None = None

    @property
    def client(self) -> grpcclient.InferenceServerClient:
        if self._client is None:
            self._client = grpcclient.InferenceServerClient(self._address)
        return self._client

    def complete(
        self, prompt: str, *, version: int | None = None,
        options: GenerationOptions | None = None,
    ) -> Completion:
        """Generate from one version (None: the version Triton serves).

        Raises:
            BadRequestError: Triton or the model refused the request.
            VersionUnavailableError: that version is not loaded.
            TritonUnavailableError: Triton cannot be reached.
        """
        started = time.perf_counter()
        inputs = build_inputs(grpcclient, prompt, options or GenerationOptions(), version=version)
        outputs = [grpcclient.InferRequestedOutput(n) for n in OUTPUTS]
        try:
            result = self.client.infer(
                self.model, inputs, outputs=outputs,
                client_timeout=self._timeout_s,
            )
        except InferenceServerException as e:
            raise translate(e, model=self.model, version=version) from e
        return parse_result(result, version=version, started_s=started)

    def control(self, op: str, *, version: int | None = None,
                timeout_s: float | None = None) -> dict[str, Any]:
        """Send a control request (`activate` a version, or `status`); returns the state.

        The answer is `{"version", "adapter_id", "switch_ms"}` of the instance that took it.

        Raises:
            ControlRefusedError: the model refused the version (the old one serves on).
            TritonUnavailableError: Triton cannot be reached or the model is not loaded.
            InferenceError: any other failure.
        """
        command: dict[str, Any] = {"op": op}
        if version is not None:
            command["version"] = version
        item = grpcclient.InferInput("control", [1, 1], "BYTES")
        item.set_data_from_numpy(np.array([[json.dumps(command).encode()]], dtype=np.object_))
        try:
            result = self.client.infer(
                self.model, [item], outputs=[grpcclient.InferRequestedOutput("text")],
                client_timeout=timeout_s or self._timeout_s,
            )
        except InferenceServerException as e:
            raise translate(e, model=self.model, version=version) from e
        state: dict[str, Any] = json.loads(result.as_numpy("text").reshape(-1)[0].decode())
        return state

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> TritonChat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncTritonChat:
    """asyncio gRPC client for the gateway; `await close()` before Triton stops."""

    def __init__(self, grpc_address: str, *, model: str, timeout_s: float = 30.0) -> None:
        self._address = grpc_address
        self.model = model
        self._timeout_s = timeout_s
        self._client: grpcaio.InferenceServerClient | None = None

    @property
    def client(self) -> grpcaio.InferenceServerClient:
        if self._client is None:
            self._client = grpcaio.InferenceServerClient(self._address)
        return self._client

    async def complete(
        self, prompt: str, *, version: int | None = None,
        options: GenerationOptions | None = None,
    ) -> Completion:
        """Generate from one version (None: the version Triton serves).

        Raises:
            BadRequestError: Triton or the model refused the request.
            VersionUnavailableError: that version is not loaded.
            TritonUnavailableError: Triton cannot be reached.
        """
        started = time.perf_counter()
        inputs = build_inputs(grpcaio, prompt, options or GenerationOptions(), version=version)
        outputs = [grpcaio.InferRequestedOutput(n) for n in OUTPUTS]
        try:
            result = await self.client.infer(
                self.model, inputs, outputs=outputs,
                client_timeout=self._timeout_s,
            )
        except InferenceServerException as e:
            raise translate(e, model=self.model, version=version) from e
        return parse_result(result, version=version, started_s=started)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
