"""The embedded base and the LoRA loop: loadable like any model, resumable, early stopping."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.trainer.conftest import fast_trainer
from tests.trainer.synthetic import billing_pairs
from trainer.checkpoint import latest_checkpoint
from trainer.lora import TrainResult, train_adapter
from trainer.model import choose_device, load_tokenizer
from trainer.packing import IGNORE_INDEX, Packed, TextExample, pack_examples


def test_the_embedded_base_loads_with_the_auto_classes(tiny_base: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_base))
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_base))
    ids = tokenizer("<|user|> hello", return_tensors="pt")["input_ids"]
    assert model(input_ids=ids).logits.shape[-1] == len(tokenizer)
    assert tokenizer.convert_ids_to_tokens(int(ids[0, 0])) == "<|user|>"


def test_packing_fills_rows_and_masks_prompts_and_padding(tiny_base: Path) -> None:
    tokenizer = load_tokenizer(tiny_base)
    examples = [TextExample(p, a) for p, a in billing_pairs(20, seed=0)]
    packed = pack_examples(tokenizer, examples, sequence_length_tokens=32)
    assert packed.input_ids.shape[1] == 32
    padding = packed.input_ids.numel() - packed.tokens
    assert 0 <= padding < 32  # only the last row is padded
    assert 0 < packed.loss_tokens < packed.tokens
    assert (packed.labels[-1, 32 - padding:] == IGNORE_INDEX).all() if padding else True


def _data(tiny_base: Path) -> tuple[Packed, Packed]:
    tokenizer = load_tokenizer(tiny_base)
    pairs = billing_pairs(120, seed=3)
    train = pack_examples(tokenizer, [TextExample(p, a) for p, a in pairs[:96]],
                          sequence_length_tokens=64)
    val = pack_examples(tokenizer, [TextExample(p, a) for p, a in pairs[96:]],
                        sequence_length_tokens=64)
    return train, val


class _Crash(Exception):
    pass


@pytest.mark.slow
def test_a_run_interrupted_after_a_checkpoint_resumes_to_the_same_adapter(
    tiny_base: Path, tmp_path: Path,
) -> None:
    train, val = _data(tiny_base)
    trainer = fast_trainer(max_steps=30, checkpoint_every_steps=10, eval_every_steps=10)
    cpu = choose_device("cpu")
    straight = train_adapter(tiny_base, train, val, trainer=trainer, placement=cpu,
                             run_dir=tmp_path / "straight")

    def crash_at_15(stage: str, step: int, total: int) -> None:
        if step == 15:
            raise _Crash

    with pytest.raises(_Crash):
        train_adapter(tiny_base, train, val, trainer=trainer, placement=cpu,
                      run_dir=tmp_path / "crashed", progress=crash_at_15)
    assert latest_checkpoint(tmp_path / "crashed") is not None
    resumed: TrainResult = train_adapter(tiny_base, train, val, trainer=trainer, placement=cpu,
                                         run_dir=tmp_path / "crashed")
    assert resumed.resumed_from_step == 10
    assert resumed.steps == straight.steps
    assert resumed.best_validation_loss == pytest.approx(straight.best_validation_loss, rel=1e-4)


def test_training_stops_early_when_validation_loss_stops_improving(
    tiny_base: Path, tmp_path: Path,
) -> None:
    train, val = _data(tiny_base)
    trainer = fast_trainer(learning_rate=3.0, max_steps=60, eval_every_steps=2,
                           early_stopping_patience=2, warmup_steps=0)
    result = train_adapter(tiny_base, train, val, trainer=trainer,
                           placement=choose_device("cpu"), run_dir=tmp_path)
    assert result.stopped_early and result.steps < 60
    assert result.best_validation_loss <= result.initial_validation_loss
