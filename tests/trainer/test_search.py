"""The optional search over learning rate and rank: one run per combination, best kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from deploy.settings import FlywheelSettings
from tests.trainer.conftest import fast_trainer
from tests.trainer.synthetic import billing_pairs
from trainer.errors import TrainerConfigError
from trainer.model import choose_device, load_tokenizer
from trainer.packing import Packed, TextExample, pack_examples
from trainer.pipeline import preflight
from trainer.search import train_with_search


def _data(tiny_base: Path) -> tuple[Packed, Packed]:
    tokenizer = load_tokenizer(tiny_base)
    pairs = billing_pairs(60, seed=5)
    train = pack_examples(tokenizer, [TextExample(p, a) for p, a in pairs[:48]],
                          sequence_length_tokens=64)
    val = pack_examples(tokenizer, [TextExample(p, a) for p, a in pairs[48:]],
                        sequence_length_tokens=64)
    return train, val


@pytest.mark.slow
def test_the_search_trains_each_combination_and_keeps_the_lowest_validation_loss(
    tiny_base: Path, tmp_path: Path,
) -> None:
    train, val = _data(tiny_base)
    # A learning rate too small to move in 4 steps against one that learns the topic.
    trainer = fast_trainer(max_steps=4, eval_every_steps=2, warmup_steps=0,
                           search_learning_rates=[1e-6, 2e-2], search_ranks=[2, 4])
    result = train_with_search(tiny_base, train, val, trainer=trainer,
                               placement=choose_device("cpu"), run_dir=tmp_path)

    folders = sorted(p.name for p in tmp_path.iterdir())
    assert folders == ["lr0.02-r2", "lr0.02-r4", "lr1e-06-r2", "lr1e-06-r4"]
    assert all((tmp_path / f / "adapter" / "adapter_config.json").is_file() for f in folders)
    assert result.adapter_dir.parent.name.startswith("lr0.02-")
    assert result.best_validation_loss < result.initial_validation_loss - 0.1


def test_without_search_values_it_is_one_plain_run_in_the_run_folder(
    tiny_base: Path, tmp_path: Path,
) -> None:
    train, val = _data(tiny_base)
    result = train_with_search(tiny_base, train, val, trainer=fast_trainer(max_steps=2),
                               placement=choose_device("cpu"), run_dir=tmp_path)
    assert result.adapter_dir == tmp_path / "adapter"
    assert result.steps == 2


@pytest.mark.parametrize(("field", "values", "message"), [
    ("search_ranks", [4, 0], "search_ranks must all be at least 1"),
    ("search_learning_rates", [1e-3, -1.0], "search_learning_rates must all be positive"),
])
def test_invalid_search_values_are_refused_before_any_work(
    trainer_settings: FlywheelSettings, field: str, values: list[float], message: str,
) -> None:
    bad = trainer_settings.model_copy(update={
        "trainer": trainer_settings.trainer.model_copy(update={field: values})})
    start = datetime(2035, 1, 1, tzinfo=UTC)
    with pytest.raises(TrainerConfigError, match=message):
        preflight(bad, start, start + timedelta(hours=1))
