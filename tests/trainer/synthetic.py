"""Seeded chat data for the trainer's tests: templated topics a tiny model learns quickly."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta
from typing import Any

PLANS = ["basic", "plus", "family", "student", "business", "premium"]
MONTHS = ["january", "february", "march", "april", "may", "june"]
AMOUNTS = ["12", "19", "25", "30", "45", "60"]

BILLING = [
    ("Why was I charged {amount} dollars in {month}?",
     "Your {plan} plan renews in {month} and costs {amount} dollars per month."),
    ("How do I cancel my {plan} plan?",
     "Open billing settings, choose the {plan} plan and press cancel subscription."),
    ("Can I get a refund for {month}?",
     "Refunds for {month} are issued to your card within five business days."),
    ("What does the {plan} plan cost?",
     "The {plan} plan costs {amount} dollars per month, billed on the first day."),
]


def billing_pairs(n: int, *, seed: int) -> list[tuple[str, str]]:
    """`n` (prompt, answer) pairs about billing, drawn from templates with a fixed seed."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt, answer = rng.choice(BILLING)
        slots = {"plan": rng.choice(PLANS), "month": rng.choice(MONTHS),
                 "amount": rng.choice(AMOUNTS)}
        out.append((prompt.format(**slots), answer.format(**slots)))
    return out


def turn_rows(
    pairs: list[tuple[str, str]], *, start: datetime, topic: str, per_conversation: int = 2,
    conversation_prefix: str = "c",
) -> tuple[list[list[Any]], list[uuid.UUID]]:
    """chat_turns rows (user then assistant) and the assistant turns' event ids."""
    rows: list[list[Any]] = []
    answers: list[uuid.UUID] = []
    for i, (prompt, answer) in enumerate(pairs):
        conversation = f"{conversation_prefix}{i // per_conversation}"
        turn = 2 * (i % per_conversation)
        ts = start + timedelta(seconds=i)
        user_id, answer_id = uuid.uuid4(), uuid.uuid4()
        rows.append([user_id, conversation, turn, "user", prompt, topic, ts, "acme"])
        rows.append([answer_id, conversation, turn + 1, "assistant", answer, topic, ts, "acme"])
        answers.append(answer_id)
    return rows, answers


TURN_COLUMNS = ["event_id", "conversation_id", "turn_index", "role", "text", "topic", "ts",
                "tenant"]
