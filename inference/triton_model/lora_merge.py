"""LoRA adapters merged into a serving model's weights without touching the base tensors.

Copied beside model.py into every version folder (it runs inside the Triton stub, so it
imports nothing from Flywheel). The serving model stays a plain transformers model, the
fastest forward here; an adapter becomes, for each module it targets, one new weight
tensor `base + scale * B @ A`. Installing an adapter only repoints `module.weight.data`
at those tensors, and the original base tensors are kept as they are, so switching
between adapters never accumulates rounding error and going back to the bare base is
exact. Memory: one merged copy of the targeted modules (the attention projections for
the adapters the trainer writes), not a second model.

Only what the trainer publishes is supported: peft LoRA with `bias="none"`, no DoRA, no
per-module rank or alpha patterns, no `modules_to_save`. Anything else is refused with
a message naming the setting, and the serving adapter stays in place.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."


class AdapterError(ValueError):
    """An adapter that cannot be merged into this model; the message says why."""


@dataclass(frozen=True)
class LoraSettings:
    """The fields of adapter_config.json the merge depends on."""

    scale: float
    fan_in_fan_out: bool


def read_settings(adapter_dir: Path) -> LoraSettings:
    """Check adapter_config.json and return the merge scale.

    Raises:
        AdapterError: the file is missing or unreadable, or names a feature not supported.
    """
    path = adapter_dir / ADAPTER_CONFIG
    try:
        config: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise AdapterError(f"{path} is missing or not JSON ({e}); republish the adapter") from e
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise AdapterError(f"{path}: peft_type is {config.get('peft_type')!r}; only LORA "
                           "adapters can be switched in place")
    refused = {
        "use_dora": bool(config.get("use_dora")),
        "rank_pattern": bool(config.get("rank_pattern")),
        "alpha_pattern": bool(config.get("alpha_pattern")),
        "modules_to_save": bool(config.get("modules_to_save")),
        "lora_bias": bool(config.get("lora_bias")),
        "bias": config.get("bias", "none") != "none",
    }
    bad = [name for name, used in refused.items() if used]
    if bad:
        raise AdapterError(f"{path} sets {', '.join(bad)}, which in-place merging does not "
                           "support; train the adapter without it")
    rank = int(config.get("r") or 0)
    if rank < 1:
        raise AdapterError(f"{path}: r must be a positive rank, got {config.get('r')!r}")
    alpha = float(config.get("lora_alpha") or rank)
    scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    return LoraSettings(scale=scale, fan_in_fan_out=bool(config.get("fan_in_fan_out")))


@dataclass(frozen=True)
class LoraUpdate:
    """One module's adapter update `scale * B @ A`, kept as its rank-r factors.

    The full-size product is only formed inside `merged`, one module at a time, so a
    switch never holds every targeted module's float32 update at once (on a large base,
    that would be a large share of the model again).
    """

    a: Any  # (rank, in) float32, on the weight's device
    b: Any  # (out, rank) float32, on the weight's device
    scale: float
    fan_in_fan_out: bool

    @property
    def shape(self) -> tuple[int, int]:
        rows, cols = int(self.b.shape[0]), int(self.a.shape[1])
        return (cols, rows) if self.fan_in_fan_out else (rows, cols)

    def merged(self, base: Any) -> Any:
        """`base + update`, computed in float32 and returned in the base's dtype."""
        import torch

        if self.fan_in_fan_out:  # (B @ A).T == A.T @ B.T
            out = torch.addmm(base.float(), self.a.T, self.b.T, alpha=self.scale)
        else:
            out = torch.addmm(base.float(), self.b, self.a, alpha=self.scale)
        return out.to(base.dtype)


def read_deltas(adapter_dir: Path, model: Any) -> dict[str, LoraUpdate]:
    """Module name -> the update of each module the adapter targets, on its device.

    Raises:
        AdapterError: the weights are unreadable, name modules the model lacks, have
            shapes that do not fit, or hold NaN/inf.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    settings = read_settings(adapter_dir)
    path = adapter_dir / ADAPTER_WEIGHTS
    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as e:
        raise AdapterError(f"{path} is not a readable safetensors file ({e}); republish it") from e
    pairs: dict[str, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        for part in ("lora_A", "lora_B"):
            marker = f".{part}."
            if marker in key:
                module = key.split(marker, 1)[0].removeprefix(_PREFIX)
                pairs.setdefault(module, {})[part] = tensor
                break
        else:
            raise AdapterError(f"{path} holds {key!r}, which is not a LoRA A/B weight; only "
                               "LoRA matrices can be switched in place")
    if not pairs:
        raise AdapterError(f"{path} holds no LoRA weights")
    modules = dict(model.named_modules())
    updates: dict[str, LoraUpdate] = {}
    for name, pair in sorted(pairs.items()):
        target = modules.get(name)
        weight = getattr(target, "weight", None)
        if weight is None:
            raise AdapterError(f"the adapter targets {name!r}, which this base model does not "
                               "have; was it trained on another base?")
        if set(pair) != {"lora_A", "lora_B"}:
            raise AdapterError(f"{path} has only {sorted(pair)} for {name!r}")
        # The factors are small: on a GPU they move to the weight's device, where the
        # merge runs (a full-size update built on the CPU would cost a host-to-device
        # copy of every targeted weight in float32).
        a = pair["lora_A"].to(weight.device, torch.float32)
        b = pair["lora_B"].to(weight.device, torch.float32)
        if a.dim() != 2 or b.dim() != 2 or b.shape[1] != a.shape[0]:
            raise AdapterError(f"{name!r}: lora_B {tuple(b.shape)} and lora_A {tuple(a.shape)} "
                               "do not multiply")
        update = LoraUpdate(a, b, settings.scale, settings.fan_in_fan_out)
        if update.shape != tuple(weight.shape):
            raise AdapterError(f"{name!r}: the adapter's update is {update.shape}, the "
                               f"weight is {tuple(weight.shape)}; was it trained on another base?")
        if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
            raise AdapterError(f"{name!r}: the adapter holds NaN or inf values")
        updates[name] = update
    return updates


class MergedWeights:
    """Installs merged adapter weights into a model; the base tensors are never written."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self._modules = dict(model.named_modules())
        #: The untouched base tensor of every module an adapter has targeted so far.
        self._base: dict[str, Any] = {}
        #: Modules whose weight currently is a merged tensor.
        self._merged: set[str] = set()

    def build(self, deltas: dict[str, LoraUpdate]) -> dict[str, Any]:
        """The weight of each affected module for an adapter (empty deltas: the bare base).

        Modules merged now but absent from `deltas` go back to their base tensor.
        """
        import torch

        weights: dict[str, Any] = {}
        with torch.no_grad():
            for name, update in deltas.items():
                base = self._base.get(name)
                if base is None:  # never touched: the module still holds its base tensor
                    base = self._modules[name].weight.data
                weights[name] = update.merged(base)
        for name in self._merged - set(deltas):
            weights[name] = self._base[name]
        return weights

    def install(self, weights: dict[str, Any]) -> dict[str, Any]:
        """Point the modules at `weights`; returns what they held, for `install` to undo."""
        previous: dict[str, Any] = {}
        for name, tensor in weights.items():
            parameter = self._modules[name].weight
            self._base.setdefault(name, parameter.data)
            previous[name] = parameter.data
            parameter.data = tensor
            if tensor is self._base[name]:
                self._merged.discard(name)
            else:
                self._merged.add(name)
        return previous
