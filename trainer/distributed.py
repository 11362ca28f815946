"""Several training processes under `torchrun`: DDP, or FSDP for bases too large to copy.

`torchrun --nproc_per_node N -m deploy.cli trainer run` (or `flywheel trainer run --nproc N`,
which spawns exactly that) starts N processes. `process_group` joins them into one group
(NCCL on CUDA, gloo on CPU) and yields a `Distributed` handle that the training loop and the
pipeline take as an argument; outside torchrun it yields `SINGLE` and nothing changes.

Division of labour: every rank trains on its own share of each global micro-batch and the
gradients are all-reduced (DDP) or reduce-scattered (FSDP); rank 0 alone reads the window,
writes checkpoints and the adapter, evaluates, and publishes, and `run_on_main` hands its
result (or its error) to the other ranks so each returns the same thing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from trainer.errors import RankFailedError, TrainerConfigError

if TYPE_CHECKING:
    from deploy.settings import TrainerSettings
    from trainer.model import Placement

logger = logging.getLogger(__name__)

T = TypeVar("T")
Strategy = Literal["ddp", "fsdp"]


@dataclass(frozen=True)
class Distributed:
    """This process's place in the training group (`SINGLE` when there is no group)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    strategy: Strategy = "ddp"

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def place(self, placement: Placement) -> Placement:
        """One GPU per process on CUDA (`cuda:<local rank>`); the CPU is shared as it is."""
        if not self.enabled or placement.device != "cuda":
            return placement
        return replace(placement, device=f"cuda:{self.local_rank}")

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def broadcast(self, value: T | None) -> T:
        """Rank 0's `value`, on every rank."""
        if not self.enabled:
            return value  # type: ignore[return-value]
        import torch.distributed as dist

        box: list[Any] = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[no-any-return]

    def all_reduce_sum(self, values: list[float], *, device: str) -> list[float]:
        """Element-wise sums over the ranks."""
        if not self.enabled:
            return values
        import torch
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return [float(v) for v in tensor.cpu()]

    def all_equal(self, text: str) -> bool:
        """Whether every rank passed the same `text` (a digest, say)."""
        if not self.enabled:
            return True
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, text)
        return len(set(gathered)) == 1

    def run_on_main(self, work: Callable[[], T]) -> T:
        """Run `work` on rank 0 only and return its result on every rank.

        Raises:
            Exception: whatever `work` raised, on rank 0 as itself and on the other ranks
                as the same exception when it can be pickled, else `RankFailedError`.
        """
        if not self.enabled:
            return work()
        outcome: tuple[bool, Any] | None = None
        error: BaseException | None = None
        if self.is_main:
            try:
                outcome = (True, work())
            except Exception as e:
                error = e
                outcome = (False, _portable(e))
        ok, value = self.broadcast(outcome)
        if error is not None:
            raise error
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def wrap(self, model: Any, placement: Placement) -> Any:
        """The module to run training forward passes through: DDP, FSDP, or `model` itself.

        FSDP shards each block named in the model's `_no_split_modules` (transformers
        declares them per architecture), then the root; it changes `model` in place.

        Raises:
            TrainerConfigError: FSDP was asked for and the model declares no blocks.
        """
        if not self.enabled:
            return model
        if self.strategy == "fsdp":
            from torch.distributed.fsdp import fully_shard

            blocks = set(getattr(_hf_model(model), "_no_split_modules", None) or [])
            if not blocks:
                raise TrainerConfigError(
                    f"trainer.distributed_strategy is 'fsdp' but {type(_hf_model(model)).__name__}"
                    " declares no `_no_split_modules` to shard by; use 'ddp'"
                )
            for module in model.modules():
                if type(module).__name__ in blocks:
                    fully_shard(module)
            fully_shard(model)
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.local_rank] if placement.device.startswith("cuda") else None
        return DistributedDataParallel(model, device_ids=device_ids)


SINGLE = Distributed()


def launched_by_torchrun() -> bool:
    """Whether this process was started by torchrun (or torch.distributed.run)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_torchelastic_launched()


@contextmanager
def process_group(trainer: TrainerSettings) -> Iterator[Distributed]:
    """Join torchrun's process group for the duration; `SINGLE` outside torchrun.

    The backend is NCCL when the trainer will use CUDA, gloo otherwise. Every wait on the
    other ranks (rank 0 evaluating and publishing, say) is bounded by
    `trainer.distributed_timeout_s`.

    Raises:
        TrainerConfigError: `trainer.device` cannot be used (as `choose_device`).
    """
    if not launched_by_torchrun():
        yield SINGLE
        return
    import torch
    import torch.distributed as dist

    from trainer.model import choose_device

    placement = choose_device(trainer.device)
    cuda = placement.device == "cuda"
    local_rank = dist.get_node_local_rank(fallback_rank=0)
    if cuda:
        torch.cuda.set_device(local_rank)
    joined = not dist.is_initialized()
    if joined:
        dist.init_process_group(backend="nccl" if cuda else "gloo",
                                timeout=timedelta(seconds=trainer.distributed_timeout_s))
    handle = Distributed(rank=dist.get_rank(), world_size=dist.get_world_size(),
                         local_rank=local_rank, strategy=trainer.distributed_strategy)
    logger.info("rank %d of %d (%s, %s)", handle.rank, handle.world_size,
                dist.get_backend(), handle.strategy)
    try:
        yield handle
    finally:
        if joined and dist.is_initialized():
            dist.destroy_process_group()


def _hf_model(model: Any) -> Any:
    # A peft model wraps the transformers model: PeftModel -> LoraModel -> PreTrainedModel.
    base = getattr(model, "get_base_model", None)
    return base() if callable(base) else model


def _portable(error: Exception) -> Exception:
    import pickle

    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RankFailedError(f"rank 0 failed: {type(error).__name__}: {error}")
    return error
