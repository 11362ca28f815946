"""Simulated users: what they ask (chatterbot-corpus pairs) and how they rate the answers.

The corpus is split once, by a stable hash of each pair, into the pairs the users ask
and a held-out fifth the demo never sends, on which it measures each version's
perplexity afterwards. A user rates an answer by how close it is to the corpus answer
(chrF): close answers get a thumbs up or a high rating, others a correction with the
corpus answer (the signal the trainer learns from) or a thumbs down.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from typing import Any

from trainer.corpus import Pair, load_pairs

HELD_OUT_EVERY = 5
#: How people wrap the same question, so a replayed pair is not an exact duplicate.
OPENERS = ("", "", "hey, ", "quick question: ", "hi! ", "so ", "ok, ", "please tell me: ")
CLOSERS = ("", "", " thanks", " :)", " please", "?")


@dataclass(frozen=True)
class TopicSplit:
    """Pairs users ask and held-out pairs, for one group of topics."""

    asked: tuple[Pair, ...]
    held_out: tuple[Pair, ...]


def split_topics(topics: list[str]) -> TopicSplit:
    """The corpus pairs of `topics`, split into asked and held out (stable across runs)."""
    asked: list[Pair] = []
    held_out: list[Pair] = []
    wanted = set(topics)
    for pair in load_pairs():
        if pair.topic not in wanted:
            continue
        key = zlib.crc32(f"{pair.prompt}\x00{pair.response}".encode())
        (held_out if key % HELD_OUT_EVERY == 0 else asked).append(pair)
    return TopicSplit(tuple(asked), tuple(held_out))


def phrase(prompt: str, rng: random.Random) -> str:
    """The prompt as one user might type it."""
    return f"{rng.choice(OPENERS)}{prompt}{rng.choice(CLOSERS)}".strip()


def similarity(answer: str, reference: str) -> float:
    """chrF of the answer against the corpus answer, in [0, 1]."""
    from sacrebleu.metrics import CHRF

    return float(CHRF().sentence_score(answer, [reference]).score) / 100.0


def feedback_for(
    *, answer: str, pair: Pair, conversation_id: str, turn_event_id: str,
    rng: random.Random, feedback_share: float,
) -> dict[str, Any] | None:
    """The `/v1/feedback` body a simulated user sends about `answer`, or None (no rating)."""
    if rng.random() >= feedback_share:
        return None
    body: dict[str, Any] = {"conversation_id": conversation_id, "turn_event_id": turn_event_id}
    score = similarity(answer, pair.response)
    if score >= 0.6:
        if rng.random() < 0.5:
            return {**body, "kind": "thumbs_up"}
        return {**body, "kind": "rating", "rating": 5 if score >= 0.8 else 4}
    roll = rng.random()
    if roll < 0.75:
        return {**body, "kind": "correction", "correction": pair.response}
    if roll < 0.9:
        return {**body, "kind": "thumbs_down"}
    return {**body, "kind": "rating", "rating": 1 if score < 0.2 else 2}
