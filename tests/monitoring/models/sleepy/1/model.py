"""A slow Python-backend model: echoes its text after sleeping 300 ms (latency alert tests)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

SLEEP_S = 0.3


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        self.version = str(args["model_version"]).encode()

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            time.sleep(SLEEP_S)
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("UPPER", text),
                        pb_utils.Tensor("VERSION", np.array([self.version], dtype=object)),
                    ]
                )
            )
        return responses
