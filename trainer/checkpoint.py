"""Checkpoints of a LoRA run: written atomically by rank 0, read back by every rank.

A checkpoint is `<run_dir>/checkpoints/step-NNNNNN/` with the adapter (peft's format) and
`trainer_state.pt` (optimizer, scheduler, loop state, RNG). The optimizer state is saved in
torch's full, name-keyed form (`torch.distributed.checkpoint.state_dict`), so a run
checkpointed by one process resumes under DDP or FSDP and the other way round.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import Any

from trainer.distributed import SINGLE, Distributed

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"
KEEP = 2


def lora_weights(model: Any) -> dict[str, Any]:
    """The trainable (LoRA) tensors by parameter name, whole and on the CPU.

    Under FSDP each is gathered from its shards, so every rank must call this together.
    """
    out = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            full = param.full_tensor() if hasattr(param, "full_tensor") else param
            out[name] = full.detach().to("cpu", copy=True)
    return out


def weights_digest(weights: dict[str, Any]) -> str:
    """SHA-256 over the tensors' names and raw bytes, in name order."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(weights):
        digest.update(name.encode())
        flat = weights[name].contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_adapter(model: Any, weights: dict[str, Any], folder: Path) -> None:
    """Save `weights` as a peft adapter in `folder`, atomically (temporary folder renamed)."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), state_dict=weights, safe_serialization=True)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def save_checkpoint(run_dir: Path, model: Any, optimizer: Any, scheduler: Any,
                    state: dict[str, Any], *, distributed: Distributed = SINGLE) -> None:
    """Write `checkpoints/step-N` on rank 0 and keep the newest two.

    Every rank calls it: under FSDP the optimizer state and weights are gathered first.
    """
    import torch

    optimizer_state = _optimizer_state(model, optimizer, distributed)
    weights = lora_weights(model)
    if distributed.is_main:
        folder = run_dir / "checkpoints" / f"step-{state['step']:06d}"
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write_adapter(model, weights, tmp / "adapter")
        torch.save({"optimizer": optimizer_state, "scheduler": scheduler.state_dict(),
                    "state": state, "rng": torch.get_rng_state()}, tmp / STATE_FILE)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        for old in sorted((run_dir / "checkpoints").glob("step-??????"))[:-KEEP]:
            shutil.rmtree(old, ignore_errors=True)
        logger.info("checkpoint at step %d in %s", state["step"], folder)
    distributed.barrier()


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint folder of a run, if any."""
    done = sorted(p for p in (run_dir / "checkpoints").glob("step-??????")
                  if (p / STATE_FILE).is_file())
    return done[-1] if done else None


def load_checkpoint(run_dir: Path, model: Any, state: dict[str, Any]) -> dict[str, Any] | None:
    """Put the newest checkpoint's adapter into `model` and its loop state into `state`.

    Call before the model is wrapped for DDP/FSDP; the optimizer and scheduler state are
    returned for `restore_optimizer` once they exist. None when there is no checkpoint.
    """
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        return None
    saved: dict[str, Any] = torch.load(checkpoint / STATE_FILE, weights_only=False)
    weights = load_file(str(checkpoint / "adapter" / "adapter_model.safetensors"))
    set_peft_model_state_dict(model, weights)
    torch.set_rng_state(saved["rng"])
    state.update(saved["state"])
    logger.info("resumed from %s", checkpoint)
    return saved


def restore_optimizer(model: Any, optimizer: Any, scheduler: Any, saved: dict[str, Any], *,
                      distributed: Distributed = SINGLE) -> None:
    """Load a checkpoint's optimizer (sharding it under FSDP) and scheduler state."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_optimizer_state_dict,
    )

    set_optimizer_state_dict(model, optimizer, saved["optimizer"],
                             options=StateDictOptions(full_state_dict=True))
    scheduler.load_state_dict(saved["scheduler"])


def _optimizer_state(model: Any, optimizer: Any, distributed: Distributed) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
    )

    # cpu_offload gathers onto rank 0 only, and needs a process group.
    options = StateDictOptions(full_state_dict=True, cpu_offload=distributed.enabled)
    return get_optimizer_state_dict(model, optimizer, options=options)
