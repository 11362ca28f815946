"""LoRA fine-tuning with peft on torch: packed rows, accumulation, checkpoints, early stop.

One loop for every base: CUDA with bf16 autocast-free weights where present, CPU float32
otherwise. Micro-batches come from a seeded order over epochs, so a resumed run sees the
same data in the same order as an uninterrupted one. Every `checkpoint_every_steps` the
adapter, optimizer, scheduler and early-stopping state are written atomically to
`<run_dir>/checkpoints/step-N`; a run started again in the same folder resumes from the
latest one. The adapter with the best validation loss is what the run returns.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.model import Placement, load_base
from trainer.packing import Packed, causal_loss

if TYPE_CHECKING:
    from deploy.settings import TrainerSettings

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]
STATE_FILE = "trainer_state.pt"


@dataclass(frozen=True)
class TrainResult:
    """What a fine-tuning run produced."""

    adapter_dir: Path
    steps: int
    best_step: int
    best_validation_loss: float
    initial_validation_loss: float
    tokens_trained: int
    train_seconds: float
    stopped_early: bool
    resumed_from_step: int | None
    trainable_parameters: int

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_trained / self.train_seconds if self.train_seconds else 0.0


def lora_model(base: Any, trainer: TrainerSettings) -> Any:
    """Wrap a causal LM with a fresh LoRA adapter as the settings describe."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=trainer.lora_rank, lora_alpha=trainer.lora_alpha, lora_dropout=trainer.lora_dropout,
        target_modules=trainer.target_modules, task_type="CAUSAL_LM",
        # GPT-2 stores its projections transposed (Conv1D); peft would warn and flip it.
        fan_in_fan_out=getattr(base.config, "model_type", "") == "gpt2",
    )
    return get_peft_model(base, config)


def train_adapter(
    base_model_path: Path,
    train: Packed,
    validation: Packed,
    *,
    trainer: TrainerSettings,
    placement: Placement,
    run_dir: Path,
    max_steps: int | None = None,
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Fine-tune a LoRA adapter on `train`, stopping early on `validation` loss.

    Raises:
        BaseModelMissingError: the base model folder is not a saved causal LM.
    """
    import torch

    torch.manual_seed(trainer.seed)
    model = lora_model(load_base(base_model_path, placement), trainer)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=trainer.learning_rate,
                                  weight_decay=trainer.weight_decay)
    micro_per_epoch = max(1, math.ceil(len(train) / trainer.batch_size))
    steps_per_epoch = max(1, micro_per_epoch // trainer.grad_accumulation_steps)
    total = min(max_steps or trainer.max_steps, trainer.max_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(trainer.warmup_steps, total))

    state = {"step": 0, "best_loss": math.inf, "best_step": 0, "bad_evals": 0,
             "initial_loss": math.nan, "tokens": 0, "seconds": 0.0, "best": None}
    resumed = _resume(run_dir, model, optimizer, scheduler, state)
    if resumed is None:
        initial = validation_loss(model, validation, batch_size=trainer.batch_size,
                                  placement=placement)
        state.update(initial_loss=initial, best_loss=initial, best=_lora_state(model))
    order = _order(len(train), seed=trainer.seed)
    model.train()
    stopped_early = False
    accum = trainer.grad_accumulation_steps
    while state["step"] < total:
        started = time.perf_counter()
        for micro in range(accum):
            index = state["step"] * accum + micro
            rows = order(index, trainer.batch_size)
            batch = train.input_ids[rows].to(placement.device)
            logits = model(input_ids=batch).logits
            loss_sum, count = causal_loss(logits, train.labels[rows].to(placement.device),
                                          train.weights[rows].to(placement.device))
            (loss_sum / count.clamp(min=1e-6) / accum).backward()
            state["tokens"] += int((train.weights[rows] > 0).sum())  # real, not padding
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        state["seconds"] += time.perf_counter() - started
        step = state["step"]
        if progress:
            progress("training", step, total)
        if step % trainer.eval_every_steps == 0 or step == total:
            loss = validation_loss(model, validation, batch_size=trainer.batch_size,
                                   placement=placement)
            model.train()
            logger.info("step %d: validation loss %.4f (best %.4f)", step, loss,
                        state["best_loss"])
            if loss < state["best_loss"] - 1e-4:
                state.update(best_loss=loss, best_step=step, bad_evals=0,
                             best=_lora_state(model))
            else:
                state["bad_evals"] += 1
                if state["bad_evals"] >= trainer.early_stopping_patience:
                    stopped_early = True
        if step % trainer.checkpoint_every_steps == 0 and step < total and not stopped_early:
            _checkpoint(run_dir, model, optimizer, scheduler, state)
        if stopped_early:
            logger.info("early stop at step %d: no better validation loss in %d evaluations",
                        step, trainer.early_stopping_patience)
            break
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, state["best"])
    adapter_dir = run_dir / "adapter"
    tmp = run_dir / ".adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    shutil.rmtree(adapter_dir, ignore_errors=True)
    tmp.rename(adapter_dir)
    return TrainResult(
        adapter_dir=adapter_dir, steps=state["step"], best_step=state["best_step"],
        best_validation_loss=state["best_loss"], initial_validation_loss=state["initial_loss"],
        tokens_trained=state["tokens"], train_seconds=state["seconds"],
        stopped_early=stopped_early, resumed_from_step=resumed,
        trainable_parameters=sum(p.numel() for p in trainable),
    )


def validation_loss(model: Any, data: Packed, *, batch_size: int, placement: Placement) -> float:
    """Mean next-token loss over the tokens that carry loss (no weights)."""
    import torch

    was_training = model.training
    model.eval()
    total, count = 0.0, 0.0
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            batch = data.input_ids[start:start + batch_size].to(placement.device)
            logits = model(input_ids=batch).logits
            s, n = causal_loss(logits, data.labels[start:start + batch_size].to(placement.device))
            total += float(s)
            count += float(n)
    if was_training:
        model.train()
    return total / max(count, 1.0)


def _schedule(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.1, 1.0 - 0.9 * (step - warmup) / max(1, total - warmup))

    return factor


def _order(n: int, *, seed: int) -> Callable[[int, int], Any]:
    """Micro-batch `index` -> row indices: a fresh seeded permutation per epoch."""
    import torch

    cache: dict[int, Any] = {}

    def rows(index: int, batch_size: int) -> Any:
        per_epoch = max(1, math.ceil(n / batch_size))
        epoch, within = divmod(index, per_epoch)
        if epoch not in cache:
            cache.clear()
            cache[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
        return cache[epoch][within * batch_size:(within + 1) * batch_size]

    return rows


def _lora_state(model: Any) -> dict[str, Any]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def _checkpoint(run_dir: Path, model: Any, optimizer: Any, scheduler: Any,
                state: dict[str, Any]) -> None:
    import torch

    folder = run_dir / "checkpoints" / f"step-{state['step']:06d}"
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(str(tmp / "adapter"), safe_serialization=True)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "state": state, "rng": torch.get_rng_state()}, tmp / STATE_FILE)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    for old in sorted((run_dir / "checkpoints").glob("step-??????"))[:-2]:
        shutil.rmtree(old, ignore_errors=True)
    logger.info("checkpoint at step %d in %s", state["step"], folder)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint folder of a run, if any."""
    done = sorted(p for p in (run_dir / "checkpoints").glob("step-??????")
                  if (p / STATE_FILE).is_file())
    return done[-1] if done else None


def _resume(run_dir: Path, model: Any, optimizer: Any, scheduler: Any,
            state: dict[str, Any]) -> int | None:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        return None
    saved = torch.load(checkpoint / STATE_FILE, weights_only=False)
    weights = load_file(str(checkpoint / "adapter" / "adapter_model.safetensors"))
    set_peft_model_state_dict(model, weights)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["rng"])
    state.update(saved["state"])
    logger.info("resumed from %s", checkpoint)
    return int(state["step"])
