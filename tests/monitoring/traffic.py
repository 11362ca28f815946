"""Synthetic chat traffic for the monitoring tests: one topic mix, or a drifted one."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta
from typing import Any

ACCOUNT = (
    ["How do I", "Can you help me", "I need to", "Please tell me how to", "Why can't I"],
    ["reset my password", "update my billing address", "change the email on my account",
     "download last month's invoice", "cancel my subscription", "add a payment card",
     "enable two-factor login", "recover my locked account"],
    ["today", "on the app", "from my phone", "before Friday", "for my team", ""],
)
SPORTS = (
    ["Who do you think", "Tell me whether", "Do you know if", "Explain why", "Guess if"],
    ["the striker will score", "the home team wins the derby", "the goalkeeper saved the penalty",
     "the league changes the offside rule", "the marathon record falls",
     "the tennis final goes to five sets", "the coach gets sacked", "the relay team qualifies"],
    ["this weekend", "in the second half", "next season", "at the world cup", "tonight", ""],
)

TURN_COLUMNS = ["event_id", "conversation_id", "turn_index", "role", "text", "model",
                "model_version", "ts", "tenant", "language", "topic", "toxicity"]


def sentences(pool: tuple[list[str], list[str], list[str]], n: int, *, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(pool[0])} {rng.choice(pool[1])} {rng.choice(pool[2])}".strip() + "?"
            for _ in range(n)]


def user_turns(texts: list[str], *, topic: str, start: datetime, end: datetime,
               tenant: str = "acme", model: str = "flywheel-chat") -> list[list[Any]]:
    step = (end - start) / max(len(texts), 1)
    return [
        [uuid.uuid4(), f"c-{uuid.uuid4().hex[:8]}", 0, "user", text, model, "", start + i * step,
         tenant, "en", topic, 0.01]
        for i, text in enumerate(texts)
    ]


def serving_version(model: str, *, version: int, start: datetime, end: datetime) -> list[Any]:
    return [model, version, f"adapter-{version}", "base", "file:///adapters", "0" * 64, None,
            start, end, 100, 20, "0" * 64, "SELECT 1", "{}", {}, "serving", end,
            end + timedelta(seconds=1)]


MODEL_VERSION_COLUMNS = ["model", "version", "adapter_id", "base_model", "adapter_uri",
                         "adapter_sha256", "previous_version", "window_start", "window_end",
                         "train_rows", "validation_rows", "content_sha256", "dataset_query",
                         "kafka_offsets", "metrics", "status", "published_at", "updated_at"]
