"""Replay: general conversations mixed into each window's training examples.

An adapter trained only on a window's topic forgets the rest (the base's perplexity on
everything else rose 429 -> 995 after one topic, see FINDINGS.md), and the gate's
regression check then rejects it. Rehearsing a share of what the base already knew is the
standard remedy. The replayed pairs come from the corpus the embedded base was
pre-trained on (chatterbot-corpus), never from the held-out regression set the gate
measures forgetting with, so the gate's measure stays honest.

Off by default (`trainer.replay_share = 0`): measured on the embedded base (BENCHMARKS.md,
Trainer), replaying half the mix from its own pre-training corpus raised the regression
perplexity rise from 5.5% to 9.4% while lowering the new topic's perplexity a little more.
That base is small and under-trained, so more steps on its training corpus over-fit it
rather than hold on to what generalizes. Replay of general data is still the standard
remedy for a real base (with its own general data, not this corpus).
"""

from __future__ import annotations

import logging
import random
from functools import cache

from trainer.corpus import Pair, load_pairs, regression_pairs
from trainer.packing import TextExample

logger = logging.getLogger(__name__)


@cache
def replay_pool() -> tuple[Pair, ...]:
    """English corpus pairs that are not in the regression set (file order).

    Raises:
        CorpusMissingError: chatterbot-corpus is not installed.
    """
    held = {(p.prompt, p.response) for p in regression_pairs()}
    return tuple(p for p in load_pairs() if (p.prompt, p.response) not in held)


def with_replay(examples: list[TextExample], *, share: float, seed: int) -> list[TextExample]:
    """`examples` plus replayed pairs making up `share` of the result, seeded, shuffled in.

    With `share == 0` (or no examples) `examples` is returned as it is.

    Raises:
        ValueError: `share` is not in [0, 1).
        CorpusMissingError: replay is asked for and chatterbot-corpus is not installed.
    """
    if not 0 <= share < 1:
        raise ValueError(f"trainer.replay_share must be in [0, 1), got {share}")
    if share == 0 or not examples:
        return examples
    pool = replay_pool()
    wanted = min(len(pool), round(len(examples) * share / (1 - share)))
    rng = random.Random(f"replay:{seed}")
    replayed = [TextExample(p.prompt, p.response) for p in rng.sample(pool, wanted)]
    mixed = examples + replayed
    rng.shuffle(mixed)
    logger.info("replay: %d corpus pairs mixed into %d window examples", wanted, len(examples))
    return mixed
