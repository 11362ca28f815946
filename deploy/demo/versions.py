"""Perplexity of each served version on the held-out pairs of the old and the new topics.

Computed after the run, in the demo's own process, with the trainer's loaders: the base
alone for version 1, the base plus the version's adapter from the model repository for
the others. The held-out pairs were never sent as traffic, so no version trained on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deploy.settings import FlywheelSettings
    from trainer.corpus import Pair


@dataclass(frozen=True)
class VersionPerplexity:
    version: int
    old_topics: float
    new_topics: float


def perplexities(
    settings: FlywheelSettings, *, old: tuple[Pair, ...], new: tuple[Pair, ...],
    versions: list[int],
) -> list[VersionPerplexity]:
    """Held-out perplexity of each version in `versions` (1 = the bare base).

    Raises:
        BaseModelMissingError: the base model is gone.
        TrainerError: a version folder holds no adapter.
    """
    import torch

    from inference.repository import version_dir
    from trainer.lora import validation_loss
    from trainer.model import choose_device, find_adapter, load_tokenizer, load_with_adapter
    from trainer.packing import TextExample, pack_examples

    torch.set_num_threads(max(1, (settings.trainer.torch_threads or 1)))
    base = settings.base_model_path()
    placement = choose_device(settings.trainer.device)
    tokenizer = load_tokenizer(base)
    seq = settings.trainer.sequence_length_tokens
    packed = {
        name: pack_examples(tokenizer, [TextExample(p.prompt, p.response) for p in pairs],
                            sequence_length_tokens=seq)
        for name, pairs in (("old", old), ("new", new))
    }
    repo = settings.triton_model_repository()
    results = []
    for version in versions:
        adapter = None if version == 1 else find_adapter(
            version_dir(repo, settings.model.name, version))
        model = load_with_adapter(base, placement, adapter)
        loss = {name: validation_loss(model, data, batch_size=16, placement=placement)
                for name, data in packed.items()}
        results.append(VersionPerplexity(version, math.exp(min(loss["old"], 50.0)),
                                         math.exp(min(loss["new"], 50.0))))
        del model
    return results
