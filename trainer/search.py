"""An optional small search over learning rate and LoRA rank on the window.

Each combination trains in its own sub-folder (so each resumes on its own); the one with
the lowest validation loss wins. Without `search_learning_rates` / `search_ranks` it is
one plain run with the configured values.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from trainer.distributed import SINGLE, Distributed
from trainer.lora import ProgressFn, TrainResult, train_adapter
from trainer.model import Placement
from trainer.packing import Packed

if TYPE_CHECKING:
    from deploy.settings import TrainerSettings

logger = logging.getLogger(__name__)


def train_with_search(
    base_model_path: Path, train: Packed, validation: Packed, *, trainer: TrainerSettings,
    placement: Placement, run_dir: Path, progress: ProgressFn | None = None,
    distributed: Distributed = SINGLE,
) -> TrainResult:
    """Train once, or once per (learning rate, rank) and keep the best validation loss.

    Raises:
        BaseModelMissingError: the base model folder is not a saved causal LM.
        RanksDivergedError: under torchrun, the processes ended with different adapters.
    """
    rates = trainer.search_learning_rates or [trainer.learning_rate]
    ranks = trainer.search_ranks or [trainer.lora_rank]
    if len(rates) == 1 and len(ranks) == 1:
        settings = trainer.model_copy(update={"learning_rate": rates[0], "lora_rank": ranks[0]})
        return train_adapter(base_model_path, train, validation, trainer=settings,
                             placement=placement, run_dir=run_dir, progress=progress,
                             distributed=distributed)
    best: TrainResult | None = None
    for rate, rank in itertools.product(rates, ranks):
        settings = trainer.model_copy(update={"learning_rate": rate, "lora_rank": rank,
                                              "lora_alpha": 2 * rank})
        result = train_adapter(base_model_path, train, validation, trainer=settings,
                               placement=placement, run_dir=run_dir / f"lr{rate:g}-r{rank}",
                               progress=progress, distributed=distributed)
        logger.info("search lr=%g rank=%d: validation loss %.4f", rate, rank,
                    result.best_validation_loss)
        if best is None or result.best_validation_loss < best.best_validation_loss:
            best = result
    assert best is not None
    return best
