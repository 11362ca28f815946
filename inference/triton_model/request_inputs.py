"""Reading the inputs of one Triton request, with errors that name what to fix.

Copied beside model.py into every version folder; it runs inside the Triton stub.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


class RequestError(ValueError):
    """A request the model cannot serve; the message is sent back to the client."""


def bad_request(message: str) -> Any:
    # Clients recognise model-side request errors by this prefix (and INVALID_ARG where
    # the backend supports codes).
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    text = f"bad request: {message}"
    return pb_utils.TritonError(text, code) if code is not None else pb_utils.TritonError(text)


def _tensor(request: Any, name: str) -> Any:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy().reshape(-1)


def one_string(request: Any, name: str) -> str | None:
    values = _tensor(request, name)
    if values is None or len(values) == 0:
        return None
    if len(values) != 1:
        raise RequestError(f"{name} takes one string, got {len(values)}")
    return _decode(values[0], name)


def strings(request: Any, name: str) -> list[str]:
    values = _tensor(request, name)
    return [] if values is None else [_decode(v, name) for v in values]


def _decode(value: Any, name: str) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RequestError(f"{name} is not valid UTF-8; send text") from e
    return str(value)


def one_number(request: Any, name: str, default: float) -> Any:
    values = _tensor(request, name)
    if values is None or len(values) == 0:
        return default
    if len(values) != 1:
        raise RequestError(f"{name} takes one number, got {len(values)}")
    value = values[0].item()
    if isinstance(value, float) and not np.isfinite(value):
        raise RequestError(f"{name} must be a finite number")
    return value
