"""Triton Python-backend model: a causal LM whose LoRA adapter is switched in place.

Copied, with lora_merge.py, into every version folder of the model repository by
`inference.repository`. The folder Triton loads is only the runtime: the instance loads
the base model once, then serves whichever version is *active*, switching adapters
inside this process (read the version's `adapter/`, check its sha256 against
`metadata.json`, merge, check) without a new stub process or a second base in memory.

Which version is active:
- at load: the version named by `<model>/active_version.json` (written by the
  controller), or this folder's own version when there is none;
- a control request `{"op": "activate", "version": N}` (the `control` input) switches
  this instance and answers once N has passed its check (a forward pass with finite
  logits; at load, `warmup_requests` generations as well); a version that fails (hash,
  unreadable weights, check) is refused with the reason and the previous one keeps
  serving; a version on another base model is refused with `base model differs`
  (that needs a full reload of the model, which the controller does);
- before each batch the instance checks active_version.json's mtime, so every instance
  follows a switch that went through another one;
- `{"op": "status"}` answers the active version.

Inputs per request: `prompt` (string), optional `max_new_tokens` (int32), `temperature`
(fp32, 0 = greedy), `top_p` (fp32), `stop` (strings), `expect_version` (int32: refused
unless it is the active version). Outputs: `text`, `prompt_tokens`, `completion_tokens`,
`finish_reason` ("stop" or "length"), `adapter_id` and `version` (the one that answered).

A bad request gets an error response naming what to fix; it never fails the batch it
arrived in nor the instance. This file runs inside the Triton stub, so it imports
nothing from Flywheel.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

# Its helper modules sit beside this file in the version folder.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from lora_merge import AdapterError, MergedWeights, read_deltas  # noqa: E402
from request_inputs import (  # noqa: E402
    RequestError,
    bad_request,
    one_number,
    one_string,
    strings,
)
from version_metrics import VersionMetrics  # noqa: E402

logger = logging.getLogger(__name__)

MAX_NEW_TOKENS_DEFAULT = 32
MAX_NEW_TOKENS_LIMIT = 1024
MAX_STOP_SEQUENCES = 4
ACTIVE_FILE = "active_version.json"
BASE_CHANGED = "base model differs"
WARMUP_PROMPT = "hello, can you help me?"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _log(message: str) -> None:
    # Triton's own log (with its timestamps), where operators and the bench look.
    log = getattr(getattr(pb_utils, "Logger", None), "log_info", None)
    if log is not None:
        log(message)
    else:
        logger.info(message)


class TritonPythonModel:
    """One model instance: tokenizer + base model, with the active version's adapter merged."""

    def initialize(self, args: dict[str, Any]) -> None:
        # transformers imports scikit-learn eagerly when it is installed (for assisted
        # generation, unused here): 1-2 s of a load on 2 busy cores. A None entry makes
        # importlib report it missing; this process is the model's own stub, so nothing
        # else is affected.
        sys.modules.setdefault("sklearn", None)  # type: ignore[arg-type]
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        threads = int(params.get("torch_threads", "1"))
        # One torch thread per instance: a load beside a serving instance otherwise fights
        # for the cores (FINDINGS: 9-15 s loads with 2 threads).
        torch.set_num_threads(max(1, threads))
        self.warmup_requests = int(params.get("warmup_requests", "2"))
        device = params.get("device", "auto")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and args.get("model_instance_kind") == "GPU":
            device = f"cuda:{args['model_instance_device_id']}"
        self.device = device

        self.model_dir = Path(args["model_repository"])
        self._active_mtime_ns = self._active_file_mtime_ns()
        version = self._active_file_version() or int(args["model_version"])
        try:
            meta = self._metadata(version)
        except AdapterError as e:
            raise pb_utils.TritonModelException(str(e)) from e
        base = meta.get("base_model")
        if not base or not Path(base).is_dir():
            raise pb_utils.TritonModelException(
                f"{self.model_dir / str(version)}/metadata.json names base model {base!r}, "
                "which is not a folder"
            )
        self.base_model = str(Path(base).resolve())
        self.tokenizer = AutoTokenizer.from_pretrained(base)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
        self.model = model.to(device).eval()
        self.weights = MergedWeights(self.model)
        cfg = self.model.config
        context: Any = getattr(cfg, "n_positions", None) or getattr(
            cfg, "max_position_embeddings", 1024)
        self.context_tokens = int(context)
        self.eos_id = self.tokenizer.eos_token_id
        self.version = 0
        self.adapter_id = ""
        self.metrics = VersionMetrics(args["model_name"])
        try:
            self._activate(version)
        except AdapterError as e:
            raise pb_utils.TritonModelException(str(e)) from e

    # -- versions ------------------------------------------------------------------

    def _metadata(self, version: int) -> dict[str, Any]:
        path = self.model_dir / str(version) / "metadata.json"
        try:
            meta: dict[str, Any] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise AdapterError(f"version {version} has no readable {path} ({e})") from e
        return meta

    def _activate(self, version: int) -> dict[str, Any]:
        """Make `version` the one this instance serves; the previous one stays on failure.

        Runs between batches (execute is this instance's only thread), so no request
        ever sees a half-installed adapter.

        Raises:
            AdapterError: the version is missing, on another base, corrupt, or failed
                its check.
        """
        started = time.perf_counter()
        if version == self.version:
            return self._state(switch_ms=0.0)
        meta = self._metadata(version)
        base = meta.get("base_model")
        if base and str(Path(base).resolve()) != self.base_model:
            raise AdapterError(f"{BASE_CHANGED}: version {version} is on {base}, this instance "
                               f"serves {self.base_model}; reload the model to switch base")
        adapter = self.model_dir / str(version) / "adapter"
        deltas: dict[str, Any] = {}
        if adapter.is_dir():
            expected = meta.get("adapter_sha256")
            actual = _sha256(adapter / "adapter_model.safetensors")
            if expected and actual != expected:
                raise AdapterError(
                    f"adapter of version {version} has sha256 {actual}, metadata says "
                    f"{expected}: the file is corrupt or was replaced; republish it")
            deltas = read_deltas(adapter, self.model)
        previous_weights = self.weights.install(self.weights.build(deltas))
        previous = (self.version, self.adapter_id)
        self.version, self.adapter_id = version, str(meta.get("adapter_id") or "base")
        try:
            self._check_weights()
            # At load, real generations (greedy and sampled) must succeed too; after that
            # the generation code is warm in this process and only the weights change.
            for i in range(self.warmup_requests if not previous[0] else 0):
                self._generate([self._ids(WARMUP_PROMPT)], max_new_tokens=4,
                               temperature=0.7 if i % 2 else 0.0, top_p=0.9)
        except Exception as e:  # noqa: BLE001 - any failure keeps the previous version
            self.weights.install(previous_weights)
            self.version, self.adapter_id = previous
            raise AdapterError(f"version {version} failed its check: {e}") from e
        switch_ms = (time.perf_counter() - started) * 1000
        self.metrics.activated(version)
        _log(f"flywheel: activated version {version} ({self.adapter_id}) in "
             f"{switch_ms:.0f} ms, pid {os.getpid()}")
        return self._state(switch_ms=switch_ms)

    def _check_weights(self) -> None:
        """One forward pass of the warm-up prompt; its logits must be finite."""
        import torch

        ids = torch.tensor([self._ids(WARMUP_PROMPT)], device=self.device)
        with torch.inference_mode():
            logits = self.model(input_ids=ids).logits
        if not bool(torch.isfinite(logits).all()):
            raise ValueError("the merged weights give NaN or inf logits")

    def _state(self, *, switch_ms: float) -> dict[str, Any]:
        return {"version": self.version, "adapter_id": self.adapter_id,
                "switch_ms": round(switch_ms, 1)}

    def _active_file_mtime_ns(self) -> int:
        try:
            return os.stat(self.model_dir / ACTIVE_FILE).st_mtime_ns
        except FileNotFoundError:
            return -1

    def _active_file_version(self) -> int | None:
        try:
            return int(json.loads((self.model_dir / ACTIVE_FILE).read_text())["version"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            _log(f"flywheel: ignoring unreadable {ACTIVE_FILE}: {e}")
            return None

    def _follow_active_file(self) -> None:
        """Switch when the controller moved another instance (one stat per batch)."""
        mtime_ns = self._active_file_mtime_ns()
        if mtime_ns == self._active_mtime_ns:
            return
        self._active_mtime_ns = mtime_ns
        version = self._active_file_version()
        if version is None or version == self.version:
            return
        try:
            self._activate(version)
        except AdapterError as e:
            _log(f"flywheel: {ACTIVE_FILE} names version {version}, which failed here "
                 f"({e}); version {self.version} keeps serving")

    def _control(self, request: Any) -> Any:
        text = one_string(request, "control") or ""
        try:
            command = json.loads(text)
            op = command["op"]
            if op == "status":
                state = self._state(switch_ms=0.0)
            elif op == "activate":
                state = self._activate(int(command["version"]))
            else:
                raise RequestError(f"control op {op!r} is unknown; use activate or status")
        except (ValueError, KeyError, TypeError) as e:
            if isinstance(e, AdapterError):
                return pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"control refused: {e}"))
            return pb_utils.InferenceResponse(error=bad_request(
                f"control must be JSON like {{\"op\": \"activate\", \"version\": 2}} ({e})"))
        return self._response(json.dumps(state), 0, 0, "stop")

    # -- requests ------------------------------------------------------------------

    def execute(self, requests: list[Any]) -> list[Any]:
        self._follow_active_file()
        responses: list[Any] = [None] * len(requests)
        controls: list[int] = []
        groups: dict[tuple[int, float, float], list[tuple[int, list[int], list[str]]]] = {}
        for i, request in enumerate(requests):
            if pb_utils.get_input_tensor_by_name(request, "control") is not None:
                controls.append(i)
                continue
            try:
                ids, max_new, temperature, top_p, stop = self._parse(request)
            except RequestError as e:
                responses[i] = pb_utils.InferenceResponse(error=bad_request(str(e)))
                self.metrics.failed(self.version, reason="bad_request")
                continue
            groups.setdefault((max_new, temperature, top_p), []).append((i, ids, stop))
        for (max_new, temperature, top_p), items in groups.items():
            started = time.perf_counter()
            try:
                outputs = self._generate(
                    [ids for _, ids, _ in items], max_new_tokens=max_new,
                    temperature=temperature, top_p=top_p,
                    stops=[stop for _, _, stop in items],
                )
            except Exception as e:  # noqa: BLE001 - answer every request, keep the instance
                logger.exception("generation failed")
                self.metrics.failed(self.version, reason="generation", count=len(items))
                for i, _, _ in items:
                    responses[i] = pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"generation failed: {e}")
                    )
                continue
            for (i, ids, _), (text, n_new, reason) in zip(items, outputs, strict=True):
                responses[i] = self._response(text, len(ids), n_new, reason)
            self.metrics.answered(self.version, count=len(items),
                                  duration_s=time.perf_counter() - started)
        # After the batch's generations: a switch never delays the requests it came with.
        for i in controls:
            responses[i] = self._control(requests[i])
        return responses

    def _parse(self, request: Any) -> tuple[list[int], int, float, float, list[str]]:
        wanted = one_number(request, "expect_version", 0)
        if wanted and int(wanted) != self.version:
            raise RequestError(f"version {int(wanted)} is not active on this instance "
                               f"(it serves {self.version}); ask for the served version")
        prompt = one_string(request, "prompt")
        if prompt is None or not prompt.strip():
            raise RequestError("prompt is empty; send the conversation text to complete")
        max_new = one_number(request, "max_new_tokens", MAX_NEW_TOKENS_DEFAULT)
        if not 1 <= max_new <= MAX_NEW_TOKENS_LIMIT:
            raise RequestError(f"max_new_tokens must be 1..{MAX_NEW_TOKENS_LIMIT}, got {max_new}")
        temperature = float(one_number(request, "temperature", 0.0))
        if not 0.0 <= temperature <= 2.0:
            raise RequestError(f"temperature must be between 0 and 2, got {temperature}")
        top_p = float(one_number(request, "top_p", 1.0))
        if not 0.0 < top_p <= 1.0:
            raise RequestError(f"top_p must be in (0, 1], got {top_p}")
        stop = strings(request, "stop")
        if len(stop) > MAX_STOP_SEQUENCES or any(not s for s in stop):
            raise RequestError(f"stop takes at most {MAX_STOP_SEQUENCES} non-empty strings")
        ids = self._ids(prompt)
        if len(ids) >= self.context_tokens:
            raise RequestError(
                f"prompt has {len(ids)} tokens, over the model's context of "
                f"{self.context_tokens}; shorten the conversation"
            )
        # Generation stops at the context's end (finish_reason "length").
        max_new = min(max_new, self.context_tokens - len(ids))
        return ids, int(max_new), round(temperature, 4), round(top_p, 4), stop

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _generate(
        self, batch: list[list[int]], *, max_new_tokens: int, temperature: float,
        top_p: float, stops: list[list[str]] | None = None,
    ) -> list[tuple[str, int, str]]:
        import torch

        width = max(len(ids) for ids in batch)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in batch])
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch])
        sample = temperature > 0.0
        kwargs: dict[str, Any] = {"do_sample": sample}
        if sample:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=self.eos_id,
                **kwargs,
            )
        results = []
        for row, new in enumerate(out[:, width:].tolist()):
            reason = "length"
            if self.eos_id in new:
                new = new[: new.index(self.eos_id)]
                reason = "stop"
            text = str(self.tokenizer.decode(new, skip_special_tokens=True))
            for s in (stops[row] if stops else []):
                cut = text.find(s)
                if cut >= 0:
                    text, reason = text[:cut], "stop"
                    new = self._ids(text) if text else []
            results.append((text, len(new), reason))
        return results

    def _response(self, text: str, n_prompt: int, n_new: int, reason: str) -> Any:
        def tensor(name: str, value: Any, dtype: Any) -> Any:
            return pb_utils.Tensor(name, np.array([value], dtype=dtype))

        return pb_utils.InferenceResponse(output_tensors=[
            tensor("text", text.encode(), np.object_),
            tensor("prompt_tokens", n_prompt, np.int32),
            tensor("completion_tokens", n_new, np.int32),
            tensor("finish_reason", reason.encode(), np.object_),
            tensor("adapter_id", self.adapter_id.encode(), np.object_),
            tensor("version", self.version, np.int32),
        ])

    def finalize(self) -> None:
        self.model = None
        self.metrics = None  # its metrics go before their families (Triton requires it)
        logger.info("unloaded %s (pid %s)", self.adapter_id, os.getpid())
