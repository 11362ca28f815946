"""Metrics of one model on one window: perplexities, BLEU/chrF, toxicity of generations."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from trainer.lora import validation_loss
from trainer.model import Placement
from trainer.packing import Packed, TextExample, pack_examples
from trainer.textformat import END, prompt_text

if TYPE_CHECKING:
    from deploy.settings import TrainerSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalData:
    """What every model of a window is measured on (packed once, shared)."""

    new: Packed
    regression: Packed
    negatives: Packed | None
    correction_prompts: list[str]
    correction_targets: list[str]
    generation_prompts: list[str]


@dataclass(frozen=True)
class Metrics:
    """One model's results; None where a metric could not be computed."""

    perplexity_new: float
    perplexity_regression: float
    perplexity_negatives: float | None = None
    bleu: float | None = None
    chrf: float | None = None
    toxicity_rate: float | None = None
    generations: int = 0  # sampled generations behind toxicity_rate
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def toxic_generations(self) -> int:
        return round((self.toxicity_rate or 0.0) * self.generations)

    def as_dict(self) -> dict[str, float]:
        values = {
            "perplexity_new": self.perplexity_new,
            "perplexity_regression": self.perplexity_regression,
            "perplexity_negatives": self.perplexity_negatives,
            "bleu": self.bleu, "chrf": self.chrf, "toxicity_rate": self.toxicity_rate,
            "generations": self.generations if self.toxicity_rate is not None else None,
        }
        return {k: float(v) for k, v in {**values, **self.extra}.items() if v is not None}


def eval_data(tokenizer: Any, *, validation: list[TextExample], regression: list[TextExample],
              negatives: list[TextExample], corrections: list[tuple[str, str]],
              trainer: TrainerSettings) -> EvalData:
    """Pack the evaluation sets once for every model compared on them."""
    seq = trainer.sequence_length_tokens
    prompts = [e.prompt for e in validation][: trainer.eval_generations]
    return EvalData(
        new=pack_examples(tokenizer, validation, sequence_length_tokens=seq),
        regression=pack_examples(tokenizer, regression, sequence_length_tokens=seq),
        negatives=pack_examples(tokenizer, negatives, sequence_length_tokens=seq)
        if negatives else None,
        correction_prompts=[p for p, _ in corrections][: trainer.eval_generations],
        correction_targets=[t for _, t in corrections][: trainer.eval_generations],
        generation_prompts=prompts,
    )


def perplexity(model: Any, packed: Packed, *, trainer: TrainerSettings,
               placement: Placement) -> float:
    """exp of the mean loss over `packed`'s response tokens (capped at exp(50))."""
    loss = validation_loss(model, packed, batch_size=trainer.batch_size, placement=placement)
    return math.exp(min(loss, 50.0))


def evaluate(model: Any, tokenizer: Any, data: EvalData, *, trainer: TrainerSettings,
             placement: Placement) -> Metrics:
    """Measure one model (a base, or a base with an adapter) on `data`."""

    def ppl(packed: Packed) -> float:
        return perplexity(model, packed, trainer=trainer, placement=placement)

    bleu = chrf = None
    if data.correction_prompts:
        hypotheses = generate(model, tokenizer, data.correction_prompts, trainer=trainer,
                              placement=placement, sample=False)
        bleu, chrf = bleu_chrf(hypotheses, data.correction_targets)
    toxicity = None
    if data.generation_prompts and toxicity_available():
        sampled = generate(model, tokenizer, data.generation_prompts, trainer=trainer,
                           placement=placement, sample=True)
        toxicity = toxicity_rate(sampled)
    return Metrics(
        perplexity_new=ppl(data.new), perplexity_regression=ppl(data.regression),
        perplexity_negatives=ppl(data.negatives) if data.negatives is not None else None,
        bleu=bleu, chrf=chrf, toxicity_rate=toxicity,
        generations=len(data.generation_prompts) if toxicity is not None else 0,
    )


def generate(model: Any, tokenizer: Any, prompts: list[str], *, trainer: TrainerSettings,
             placement: Placement, sample: bool) -> list[str]:
    """Answers to `prompts` in the chat format: greedy, or sampled with the run's seed."""
    import torch

    torch.manual_seed(trainer.seed)
    inputs = tokenizer([prompt_text(p) for p in prompts], return_tensors="pt", padding=True,
                       add_special_tokens=False).to(placement.device)
    options: dict[str, Any] = {"do_sample": sample, "max_new_tokens": trainer.max_new_tokens,
                               "pad_token_id": tokenizer.pad_token_id,
                               "eos_token_id": tokenizer.eos_token_id}
    if sample:
        options.update(top_p=0.9, temperature=1.0)
    with torch.no_grad():
        out = model.generate(**inputs, **options)
    texts = tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:],
                                   skip_special_tokens=False)
    return [t.split(END)[0].replace(tokenizer.pad_token or "", "").strip() for t in texts]


def bleu_chrf(hypotheses: list[str], references: list[str]) -> tuple[float, float]:
    """Corpus BLEU and chrF (sacrebleu) of the answers against the users' corrections."""
    import sacrebleu

    bleu = sacrebleu.corpus_bleu(hypotheses, [references]).score
    chrf = sacrebleu.corpus_chrf(hypotheses, [references]).score
    return float(bleu), float(chrf)


@cache
def toxicity_available() -> bool:
    """Whether alt-profanity-check is installed (the toxicity metric is skipped otherwise)."""
    try:
        import profanity_check  # noqa: F401
    except ImportError:
        logger.warning("alt-profanity-check is not installed: skipping the toxicity metric "
                       "(pip install alt-profanity-check to enable it)")
        return False
    return True


def toxicity_rate(texts: list[str], *, threshold: float = 0.5) -> float:
    """Share of texts alt-profanity-check scores above `threshold`."""
    from profanity_check import predict_prob

    if not texts:
        return 0.0
    scores = predict_prob([t or " " for t in texts])
    return float(sum(1 for s in scores if s > threshold) / len(texts))
