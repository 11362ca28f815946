"""`flywheel trainer bootstrap`: the embedded base model, built here from chatterbot-corpus.

No model hub is reachable from these machines, so the default base is a small GPT-2-style
model trained from scratch: a byte-level BPE tokenizer (`tokenizers`), then a short,
seeded pre-training run on the corpus in the chat format of `trainer.textformat`. It is
saved in Hugging Face format, so the trainer loads it like any other causal LM. The
regression set is held out of pre-training.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trainer.corpus import Pair, languages, load_pairs, regression_pairs
from trainer.packing import TextExample, pack_examples
from trainer.textformat import END, SPECIAL_TOKENS

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]
MANIFEST = "flywheel-bootstrap.json"


@dataclass(frozen=True)
class BootstrapConfig:
    """Size of the embedded base and of its pre-training run."""

    vocab_size: int = 8000
    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4
    sequence_length_tokens: int = 128
    batch_size: int = 16
    steps: int = 500
    learning_rate: float = 3e-3
    all_languages: bool = True
    held_out_topics: tuple[str, ...] = ()
    seed: int = 0

    @classmethod
    def quick(cls, *, seed: int = 0, held_out_topics: tuple[str, ...] = ()) -> BootstrapConfig:
        """A much smaller model built in seconds, for tests."""
        return cls(vocab_size=1024, n_layer=2, n_embd=64, n_head=2, sequence_length_tokens=64,
                   batch_size=16, steps=60, learning_rate=5e-3, all_languages=False,
                   held_out_topics=held_out_topics, seed=seed)


@dataclass(frozen=True)
class BootstrapResult:
    path: Path
    parameters: int
    tokens_trained: int
    seconds: float
    heldout_perplexity: float
    reused: bool


def bootstrap(
    path: Path, *, config: BootstrapConfig | None = None, force: bool = False,
    progress: ProgressFn | None = None,
) -> BootstrapResult:
    """Build the base model at `path` (reused when already built with the same config).

    Written to a temporary sibling folder first and renamed into place, so an interrupted
    build never leaves a half-saved model behind.

    Raises:
        CorpusMissingError: chatterbot-corpus is not installed.
    """
    config = config or BootstrapConfig()
    manifest = path / MANIFEST
    if manifest.is_file() and not force:
        recorded = json.loads(manifest.read_text())
        if _same_config(recorded.get("config"), config):
            return BootstrapResult(path, recorded["parameters"], recorded["tokens_trained"],
                                   0.0, recorded["heldout_perplexity"], reused=True)
    import torch

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    held_out = {(p.prompt, p.response) for p in regression_pairs()}
    langs = languages() if config.all_languages else ("english",)
    pairs = [p for p in load_pairs(langs)
             if (p.prompt, p.response) not in held_out and p.topic not in config.held_out_topics]
    tokenizer = train_tokenizer(pairs, vocab_size=config.vocab_size)
    model = _new_model(config, tokenizer)
    seq = config.sequence_length_tokens
    data = pack_examples(tokenizer, [TextExample(p.prompt, p.response) for p in pairs],
                         sequence_length_tokens=seq, loss_on_prompt=True)
    heldout = pack_examples(tokenizer, [TextExample(p.prompt, p.response)
                                        for p in regression_pairs()],
                            sequence_length_tokens=seq, loss_on_prompt=True)
    tokens = _pretrain(model, data, config, progress)
    ppl = _perplexity(model, heldout)
    parameters = sum(p.numel() for p in model.parameters())
    tmp = path.with_name(f".{path.name}.tmp-{time.time_ns()}")
    tmp.mkdir(parents=True)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    seconds = time.perf_counter() - started
    (tmp / MANIFEST).write_text(json.dumps({
        "config": asdict(config), "parameters": parameters, "tokens_trained": tokens,
        "heldout_perplexity": ppl, "seconds": round(seconds, 1), "pairs": len(pairs),
    }, indent=2))
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    logger.info("base model built at %s: %d parameters, held-out ppl %.1f", path, parameters, ppl)
    return BootstrapResult(path, parameters, tokens, seconds, ppl, reused=False)


def _same_config(recorded: dict[str, Any] | None, config: BootstrapConfig) -> bool:
    # A manifest written before a field existed was built with that field's default.
    if recorded is None:
        return False
    wanted = json.loads(json.dumps(asdict(config)))  # tuples compare as JSON lists
    return {**json.loads(json.dumps(asdict(BootstrapConfig()))), **recorded} == wanted


def train_tokenizer(pairs: list[Pair], *, vocab_size: int) -> Any:
    """A byte-level BPE tokenizer over the pairs, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    texts = (t for p in pairs for t in (p.prompt, p.response))
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=END, bos_token=END, unk_token=END, pad_token="<|pad|>",
        additional_special_tokens=SPECIAL_TOKENS[1:3], model_max_length=1024,
    )


def _new_model(config: BootstrapConfig, tokenizer: Any) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt = GPT2Config(
        vocab_size=len(tokenizer), n_positions=1024, n_embd=config.n_embd,
        n_layer=config.n_layer, n_head=config.n_head,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(gpt)


def _pretrain(model: Any, data: Any, config: BootstrapConfig,
              progress: ProgressFn | None) -> int:
    import torch

    from trainer.packing import causal_loss

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                                  weight_decay=0.01)
    warmup = max(1, config.steps // 10)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (config.steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(data), generator=generator)
    cursor = 0
    tokens = 0
    for step in range(config.steps):
        if cursor + config.batch_size > len(order):
            order = torch.randperm(len(data), generator=generator)
            cursor = 0
        rows = order[cursor:cursor + config.batch_size]
        cursor += config.batch_size
        logits = model(input_ids=data.input_ids[rows]).logits
        loss_sum, count = causal_loss(logits, data.labels[rows])
        (loss_sum / count.clamp(min=1)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(rows.numel()) * config.sequence_length_tokens
        if progress:
            progress("pre-training", step + 1, config.steps)
    model.eval()
    return tokens


def _perplexity(model: Any, data: Any) -> float:
    import torch

    from trainer.packing import causal_loss

    total, count = 0.0, 0.0
    with torch.no_grad():
        for start in range(0, len(data), 16):
            logits = model(input_ids=data.input_ids[start:start + 16]).logits
            loss_sum, n = causal_loss(logits, data.labels[start:start + 16])
            total += float(loss_sum)
            count += float(n)
    return math.exp(total / max(count, 1.0))
