"""LoRA fine-tuning with peft on torch: packed rows, accumulation, checkpoints, early stop.

One loop for every base: CUDA with bf16 autocast-free weights where present, CPU float32
otherwise. Micro-batches come from a seeded order over epochs, so a resumed run sees the
same data in the same order as an uninterrupted one. Every `checkpoint_every_steps` the
adapter, optimizer, scheduler and early-stopping state are written atomically to
`<run_dir>/checkpoints/step-N`; a run started again in the same folder resumes from the
latest one. The adapter with the best validation loss is what the run returns.

Under torchrun (`distributed`, see trainer/distributed.py) `batch_size` is per process:
each global micro-batch of `batch_size * world_size` rows is dealt out across the ranks,
and each rank scales its summed loss by the whole micro-batch's token count, so the
all-reduced gradient is the one a single process would compute on the global batch.
Validation is split the same way and its sums all-reduced, so every rank takes the same
early-stopping decisions; only rank 0 writes checkpoints and the adapter.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    lora_weights,
    restore_optimizer,
    save_checkpoint,
    weights_digest,
    write_adapter,
)
from trainer.distributed import SINGLE, Distributed
from trainer.errors import RanksDivergedError
from trainer.model import Placement, load_base
from trainer.packing import IGNORE_INDEX, Packed, causal_loss

if TYPE_CHECKING:
    from deploy.settings import TrainerSettings

__all__ = ["TrainResult", "latest_checkpoint", "lora_model", "train_adapter",
           "validation_loss"]

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TrainResult:
    """What a fine-tuning run produced (the same on every rank of a distributed run)."""

    adapter_dir: Path
    steps: int
    best_step: int
    best_validation_loss: float
    initial_validation_loss: float
    tokens_trained: int
    """Real (non-padding) tokens trained on, by all processes together."""
    train_seconds: float
    stopped_early: bool
    resumed_from_step: int | None
    trainable_parameters: int
    weights_sha256: str = ""
    """Digest of the returned adapter's tensors (`trainer.checkpoint.weights_digest`)."""
    world_size: int = 1

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
    distributed: Distributed = SINGLE,
) -> TrainResult:
    """Fine-tune a LoRA adapter on `train`, stopping early on `validation` loss.

    Under torchrun every rank calls it with the same data and settings and its own
    `distributed` handle (and `placement`, from `distributed.place`).

    Raises:
        BaseModelMissingError: the base model folder is not a saved causal LM.
        TrainerConfigError: FSDP was asked for on a model it cannot shard.
        RanksDivergedError: the processes ended with different adapters.
    """
    import torch

    torch.manual_seed(trainer.seed)
    model = lora_model(load_base(base_model_path, placement), trainer)
    world = distributed.world_size
    micro_per_epoch = max(1, math.ceil(len(train) / (trainer.batch_size * world)))
    steps_per_epoch = max(1, micro_per_epoch // trainer.grad_accumulation_steps)
    total = min(max_steps or trainer.max_steps, trainer.max_epochs * steps_per_epoch)

    state: dict[str, Any] = {"step": 0, "best_loss": math.inf, "best_step": 0, "bad_evals": 0,
             "initial_loss": math.nan, "tokens": 0, "seconds": 0.0, "best": None}
    saved = load_checkpoint(run_dir, model, state)
    runner = distributed.wrap(model, placement)
    trainable = [p for p in model.parameters() if p.requires_grad]  # after FSDP's swap
    optimizer = torch.optim.AdamW(trainable, lr=trainer.learning_rate,
                                  weight_decay=trainer.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(trainer.warmup_steps, total))
    if saved is not None:
        restore_optimizer(model, optimizer, scheduler, saved, distributed=distributed)
    if distributed.enabled:
        # Different dropout masks per rank, reproducible from the step a run starts at.
        torch.manual_seed(trainer.seed + 100_003 * (distributed.rank + 1) + state["step"])
    evaluate = _validator(model, validation, trainer=trainer, placement=placement,
                          distributed=distributed)
    if saved is None:
        initial = evaluate()
        state.update(initial_loss=initial, best_loss=initial, best=lora_weights(model))
    order = _order(len(train), seed=trainer.seed)
    model.train()
    stopped_early = False
    accum = trainer.grad_accumulation_steps
    global_batch = trainer.batch_size * world
    while state["step"] < total:
        started = time.perf_counter()
        for micro in range(accum):
            rows = order(state["step"] * accum + micro, global_batch)
            mine, live = _share(rows, distributed)
            device = placement.device
            with _accumulating(runner, distributed, sync=micro == accum - 1):
                logits = runner(input_ids=train.input_ids[mine].to(device)).logits
                loss_sum, _ = causal_loss(logits, train.labels[mine].to(device),
                                          train.weights[mine].to(device))
                scale = world / max(_loss_tokens(train, rows), 1e-6) / accum if live else 0.0
                (loss_sum * scale).backward()
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
            loss = evaluate()
            model.train()
            logger.info("step %d: validation loss %.4f (best %.4f)", step, loss,
                        state["best_loss"])
            if loss < state["best_loss"] - 1e-4:
                state.update(best_loss=loss, best_step=step, bad_evals=0,
                             best=lora_weights(model))
            else:
                state["bad_evals"] += 1
                if state["bad_evals"] >= trainer.early_stopping_patience:
                    stopped_early = True
        if step % trainer.checkpoint_every_steps == 0 and step < total and not stopped_early:
            save_checkpoint(run_dir, model, optimizer, scheduler, state, distributed=distributed)
        if stopped_early:
            logger.info("early stop at step %d: no better validation loss in %d evaluations",
                        step, trainer.early_stopping_patience)
            break
    digest = weights_digest(state["best"])
    if not distributed.all_equal(digest):
        raise RanksDivergedError(
            f"the {world} training processes ended with different LoRA weights (rank "
            f"{distributed.rank}: {digest[:12]}); nothing was written. Check that every rank "
            "got the same data and settings"
        )
    adapter_dir = run_dir / "adapter"
    if distributed.is_main:
        write_adapter(model, state["best"], adapter_dir)
        logger.info("adapter written to %s (best step %d)", adapter_dir, state["best_step"])
    distributed.barrier()
    return TrainResult(
        adapter_dir=adapter_dir, steps=state["step"], best_step=state["best_step"],
        best_validation_loss=state["best_loss"], initial_validation_loss=state["initial_loss"],
        tokens_trained=state["tokens"], train_seconds=state["seconds"],
        stopped_early=stopped_early,
        resumed_from_step=int(saved["state"]["step"]) if saved is not None else None,
        trainable_parameters=sum(t.numel() for t in state["best"].values()),
        weights_sha256=digest, world_size=world,
    )


def _share(rows: Any, distributed: Distributed) -> tuple[Any, bool]:
    """This rank's rows of a global micro-batch; a stand-in row (not counted) if none."""
    mine = rows[distributed.rank::distributed.world_size]
    if len(mine):
        return mine, True
    return rows[:1], False  # every rank must run forward and backward for the all-reduce


def _loss_tokens(data: Packed, rows: Any) -> float:
    """The weighted count of loss tokens in `rows`, as `causal_loss` counts them."""
    labels = data.labels[rows][:, 1:]
    return float(((labels != IGNORE_INDEX).float() * data.weights[rows][:, 1:]).sum())


def _accumulating(runner: Any, distributed: Distributed, *,
                  sync: bool) -> AbstractContextManager[Any]:
    """Skip the gradient all-reduce on all but the last micro-batch of a step."""
    if not distributed.enabled:
        return nullcontext()
    if distributed.strategy == "fsdp":
        runner.set_requires_gradient_sync(sync)
        return nullcontext()
    return nullcontext() if sync else runner.no_sync()  # type: ignore[no-any-return]


def _validator(model: Any, data: Packed, *, trainer: TrainerSettings, placement: Placement,
               distributed: Distributed) -> Callable[[], float]:
    def run() -> float:
        return validation_loss(model, data, batch_size=trainer.batch_size,
                               placement=placement, distributed=distributed)

    return run


def validation_loss(model: Any, data: Packed, *, batch_size: int, placement: Placement,
                    distributed: Distributed = SINGLE) -> float:
    """Mean next-token loss over the tokens that carry loss (no weights).

    Distributed, each rank measures every `world_size`-th batch and the sums are
    all-reduced; under FSDP every rank runs the same number of forward passes.
    """
    import torch

    was_training = model.training
    model.eval()
    starts = list(range(0, len(data), batch_size))
    world, rank = distributed.world_size, distributed.rank
    total, count = 0.0, 0.0
    with torch.no_grad():
        for round_ in range(math.ceil(len(starts) / world)):
            index = round_ * world + rank
            live = index < len(starts)
            if not live and distributed.strategy != "fsdp":
                continue
            start = starts[index] if live else starts[0]
            batch = data.input_ids[start:start + batch_size].to(placement.device)
            logits = model(input_ids=batch).logits
            s, n = causal_loss(logits, data.labels[start:start + batch_size].to(placement.device))
            if live:
                total += float(s)
                count += float(n)
    total, count = distributed.all_reduce_sum([total, count], device=placement.device)
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
