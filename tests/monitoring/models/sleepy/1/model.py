"""A slow Python-backend model: echoes its text after sleeping 300 ms (latency alert tests).

It reports each answer through the served model's own per-version metrics
(`version_metrics.py`, which the test copies beside this file), the series the latency
rules read.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).resolve().parent))
from version_metrics import VersionMetrics  # noqa: E402

SLEEP_S = 0.3


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        self.version_number = int(args["model_version"])
        self.version = str(self.version_number).encode()
        self.metrics = VersionMetrics(args["model_name"])
        self.metrics.activated(self.version_number)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            started = time.perf_counter()
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
            self.metrics.answered(self.version_number, count=1,
                                  duration_s=time.perf_counter() - started)
        return responses
