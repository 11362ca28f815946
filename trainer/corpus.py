"""The chatterbot-corpus conversations, as (topic, prompt, response) pairs."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from trainer.errors import CorpusMissingError

logger = logging.getLogger(__name__)

REGRESSION_SET = "regression.jsonl"


@dataclass(frozen=True)
class Pair:
    """One exchange: what a user said and what the bot answered."""

    topic: str
    prompt: str
    response: str
    language: str = "english"


def corpus_root() -> Path:
    """The `data/` folder of the installed chatterbot-corpus package.

    Raises:
        CorpusMissingError: the package is not installed.
    """
    try:
        import chatterbot_corpus
    except ImportError as e:
        raise CorpusMissingError(
            "the chatterbot-corpus package is not installed; install it with "
            "`.venv/bin/pip install chatterbot-corpus==1.3.3` (it is in deploy/constraints.txt)"
        ) from e
    return Path(chatterbot_corpus.__file__).parent / "data"


@cache
def load_pairs(languages: tuple[str, ...] = ("english",)) -> tuple[Pair, ...]:
    """Every consecutive (line, next line) pair of the corpus in `languages`, in file order.

    Raises:
        CorpusMissingError: the package is not installed.
    """
    import yaml

    pairs: list[Pair] = []
    root = corpus_root()
    for language in languages:
        for path in sorted((root / language).glob("*.yml")):
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            topic = path.stem
            for conversation in doc.get("conversations") or []:
                lines = [str(x).strip() for x in conversation if x is not None and str(x).strip()]
                for prompt, response in zip(lines, lines[1:], strict=False):
                    pairs.append(Pair(topic, prompt, response, language))
    return tuple(pairs)


def languages() -> tuple[str, ...]:
    """Every language folder of the corpus, sorted."""
    return tuple(sorted(p.name for p in corpus_root().iterdir() if p.is_dir()))


def regression_pairs() -> list[Pair]:
    """The fixed regression set shipped in `trainer/data/` (English pairs across topics).

    Kept out of the bootstrap's pre-training, so its perplexity measures what a base or
    an adapter knows in general, and a rise measures forgetting.
    """
    text = resources.files("trainer.data").joinpath(REGRESSION_SET).read_text(encoding="utf-8")
    return [Pair(**json.loads(line)) for line in text.splitlines() if line.strip()]


def build_regression_set(*, per_topic: int = 4) -> list[Pair]:
    """Choose the regression set: every 7th English pair, `per_topic` per topic at most.

    Used once to write `trainer/data/regression.jsonl`; deterministic.
    """
    chosen: list[Pair] = []
    counts: dict[str, int] = {}
    for i, pair in enumerate(load_pairs()):
        if i % 7 == 3 and counts.get(pair.topic, 0) < per_topic:
            counts[pair.topic] = counts.get(pair.topic, 0) + 1
            chosen.append(pair)
    return chosen
