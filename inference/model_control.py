"""Triton's side of a swap: the control request, explicit load and unload, readiness.

The swap policy (what to switch to, when, what to record and alert) is `inference.swap`;
these functions only talk to Triton and translate its errors.
"""

from __future__ import annotations

import logging
import time
from contextlib import closing
from typing import Any

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from inference.client import ControlRefusedError, TritonChat
from inference.errors import InferenceError, SwapError, TritonUnavailableError

logger = logging.getLogger(__name__)


def activate(grpc_address: str, model: str, version: int, *, timeout_s: float) -> dict[str, Any]:
    """Ask the serving model to switch to `version` in place; returns its new state.

    Raises:
        ControlRefusedError: the model refused the version (it serves the old one).
        SwapError: the control request failed otherwise.
        TritonUnavailableError: Triton cannot be reached.
    """
    with TritonChat(grpc_address, model=model, timeout_s=timeout_s) as chat:
        try:
            return chat.control("activate", version=version)
        except (ControlRefusedError, TritonUnavailableError):
            raise
        except InferenceError as e:
            raise SwapError(f"activating version {version} failed: {e}") from e


def active_version(grpc_address: str, model: str, *, timeout_s: float) -> int:
    """The version the model says it serves.

    Raises:
        InferenceError: Triton or the model did not answer.
    """
    with TritonChat(grpc_address, model=model, timeout_s=timeout_s) as chat:
        return int(chat.control("status")["version"])


def load(grpc_address: str, model: str, version: int, *, timeout_s: float) -> None:
    """Explicitly load (or reload) a model and wait until `version` is ready.

    Raises:
        SwapError: the load failed or did not get ready in time.
        TritonUnavailableError: Triton cannot be reached.
    """
    try:
        with closing(grpcclient.InferenceServerClient(grpc_address)) as c:
            c.load_model(model, client_timeout=timeout_s)
            deadline = time.monotonic() + timeout_s
            while not c.is_model_ready(model, str(version)):
                if time.monotonic() > deadline:
                    raise SwapError(f"version {version} not ready after {timeout_s:.0f} s")
                time.sleep(0.1)
    except InferenceServerException as e:
        message = e.message() or str(e)
        if "failed to connect" in message.lower() or "UNAVAILABLE" in str(e.status()):
            raise TritonUnavailableError(
                f"Triton at {grpc_address} is unreachable: {message}") from e
        raise SwapError(f"Triton could not load version {version}: {message}") from e


def unload(grpc_address: str, model: str) -> None:
    """Unload a model, best effort: it may never have loaded."""
    try:
        with closing(grpcclient.InferenceServerClient(grpc_address)) as c:
            c.unload_model(model)
    except InferenceServerException as e:
        logger.warning("could not unload %s: %s", model, e)


def is_ready(grpc_address: str, model: str) -> bool:
    """Whether Triton has the model loaded and ready (any version folder)."""
    try:
        with closing(grpcclient.InferenceServerClient(grpc_address)) as c:
            return bool(c.is_model_ready(model))
    except InferenceServerException:
        return False
