"""Triton Python-backend model: a causal LM (base + the LoRA adapter of this version).

Copied into every version folder of the model repository by `inference.repository`; it
reads that folder's `metadata.json` to find the base model and the optional `adapter/`.
The adapter's sha256 is checked against the metadata, then merged into the base weights
at load (merged generation is faster than peft's unmerged forward).

Inputs per request: `prompt` (string), optional `max_new_tokens` (int32), `temperature`
(fp32, 0 = greedy), `top_p` (fp32), `stop` (strings). Outputs: `text`, `prompt_tokens`,
`completion_tokens`, `finish_reason` ("stop" or "length") and `adapter_id`.

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
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

logger = logging.getLogger(__name__)

MAX_NEW_TOKENS_DEFAULT = 32
MAX_NEW_TOKENS_LIMIT = 1024
MAX_STOP_SEQUENCES = 4


class RequestError(ValueError):
    """A request the model cannot serve; the message is sent back to the client."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class TritonPythonModel:
    """One model instance: tokenizer + merged model on CPU or one GPU."""

    def initialize(self, args: dict[str, Any]) -> None:
        # transformers imports scikit-learn eagerly when it is installed (for assisted
        # generation, unused here): 1-2 s of a version's load on 2 busy cores, while the
        # old version serves beside it. A None entry makes importlib report it missing;
        # this process is the model's own stub, so nothing else is affected.
        sys.modules.setdefault("sklearn", None)  # type: ignore[arg-type]
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        threads = int(params.get("torch_threads", "1"))
        # One torch thread per instance: loading a new version beside a serving one
        # otherwise fights for the cores (FINDINGS: 9-15 s loads with 2 threads).
        torch.set_num_threads(max(1, threads))
        device = params.get("device", "auto")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and args.get("model_instance_kind") == "GPU":
            device = f"cuda:{args['model_instance_device_id']}"
        self.device = device

        version_dir = Path(args["model_repository"]) / args["model_version"]
        meta = json.loads((version_dir / "metadata.json").read_text())
        self.adapter_id = str(meta.get("adapter_id") or "base")
        base = meta.get("base_model")
        if not base or not Path(base).is_dir():
            raise pb_utils.TritonModelException(
                f"{version_dir}/metadata.json names base model {base!r}, which is not a folder"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(base)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
        adapter = version_dir / "adapter"
        if adapter.is_dir():
            expected = meta.get("adapter_sha256")
            actual = _sha256(adapter / "adapter_model.safetensors")
            if expected and actual != expected:
                raise pb_utils.TritonModelException(
                    f"adapter of version {args['model_version']} has sha256 {actual}, metadata "
                    f"says {expected}: the file is corrupt or was replaced; republish it"
                )
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        self.model = model.to(device).eval()
        cfg = self.model.config
        context: Any = getattr(cfg, "n_positions", None) or getattr(
            cfg, "max_position_embeddings", 1024)
        self.context_tokens = int(context)
        self.eos_id = self.tokenizer.eos_token_id
        # Warm-up before Triton marks this version ready and moves traffic to it: real
        # generations (greedy and sampled) must succeed, or the load fails.
        for i in range(int(params.get("warmup_requests", "2"))):
            self._generate([self._ids("hello, can you help me?")], max_new_tokens=4,
                           temperature=0.7 if i % 2 else 0.0, top_p=0.9)
        logger.info("loaded version %s (%s) on %s", args["model_version"], self.adapter_id, device)

    # -- requests ------------------------------------------------------------------

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        groups: dict[tuple[int, float, float], list[tuple[int, list[int], list[str]]]] = {}
        for i, request in enumerate(requests):
            try:
                ids, max_new, temperature, top_p, stop = self._parse(request)
            except RequestError as e:
                responses[i] = pb_utils.InferenceResponse(error=_bad_request(str(e)))
                continue
            groups.setdefault((max_new, temperature, top_p), []).append((i, ids, stop))
        for (max_new, temperature, top_p), items in groups.items():
            try:
                outputs = self._generate(
                    [ids for _, ids, _ in items], max_new_tokens=max_new,
                    temperature=temperature, top_p=top_p,
                    stops=[stop for _, _, stop in items],
                )
            except Exception as e:  # noqa: BLE001 - answer every request, keep the instance
                logger.exception("generation failed")
                for i, _, _ in items:
                    responses[i] = pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"generation failed: {e}")
                    )
                continue
            for (i, ids, _), (text, n_new, reason) in zip(items, outputs, strict=True):
                responses[i] = self._response(text, len(ids), n_new, reason)
        return responses

    def _parse(self, request: Any) -> tuple[list[int], int, float, float, list[str]]:
        prompt = _one_string(request, "prompt")
        if prompt is None or not prompt.strip():
            raise RequestError("prompt is empty; send the conversation text to complete")
        max_new = _one_number(request, "max_new_tokens", MAX_NEW_TOKENS_DEFAULT)
        if not 1 <= max_new <= MAX_NEW_TOKENS_LIMIT:
            raise RequestError(f"max_new_tokens must be 1..{MAX_NEW_TOKENS_LIMIT}, got {max_new}")
        temperature = float(_one_number(request, "temperature", 0.0))
        if not 0.0 <= temperature <= 2.0:
            raise RequestError(f"temperature must be between 0 and 2, got {temperature}")
        top_p = float(_one_number(request, "top_p", 1.0))
        if not 0.0 < top_p <= 1.0:
            raise RequestError(f"top_p must be in (0, 1], got {top_p}")
        stop = _strings(request, "stop")
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
        ])

    def finalize(self) -> None:
        self.model = None
        logger.info("unloaded %s (pid %s)", self.adapter_id, os.getpid())


def _bad_request(message: str) -> Any:
    # Clients recognise model-side request errors by this prefix (and INVALID_ARG where
    # the backend supports codes).
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    text = f"bad request: {message}"
    return pb_utils.TritonError(text, code) if code is not None else pb_utils.TritonError(text)


def _tensor(request: Any, name: str) -> Any:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy().reshape(-1)


def _one_string(request: Any, name: str) -> str | None:
    values = _tensor(request, name)
    if values is None or len(values) == 0:
        return None
    if len(values) != 1:
        raise RequestError(f"{name} takes one string, got {len(values)}")
    return _decode(values[0], name)


def _strings(request: Any, name: str) -> list[str]:
    values = _tensor(request, name)
    return [] if values is None else [_decode(v, name) for v in values]


def _decode(value: Any, name: str) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RequestError(f"{name} is not valid UTF-8; send text") from e
    return str(value)


def _one_number(request: Any, name: str, default: float) -> Any:
    values = _tensor(request, name)
    if values is None or len(values) == 0:
        return default
    if len(values) != 1:
        raise RequestError(f"{name} takes one number, got {len(values)}")
    value = values[0].item()
    if isinstance(value, float) and not np.isfinite(value):
        raise RequestError(f"{name} must be a finite number")
    return value
