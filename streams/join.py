"""Stage 3: join each FeedbackEvent to the assistant turn it rates; emit training examples.

State is a TTL window in memory, per worker:
- curated assistant turns (with the user turn before them as the prompt), kept
  `join_ttl_s` or until `join_max_turns` are held;
- feedback waiting for its turn ("early" feedback), until its TTL passes, when it is
  counted as an orphan.

Feedback whose turn is no longer in memory (another worker curated it, or this worker
restarted) is looked up in ClickHouse by the worker before it is declared an orphan
(see `streams.worker`), so the warehouse doubles as the join's durable changelog.
Example ids are derived from (turn, feedback) ids, so a replay rewrites the same row.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from schemas.feedback import FeedbackEvent, FeedbackKind

EXAMPLE_NAMESPACE = uuid.UUID("6f1c1a52-7a61-4c5e-9d49-6e0b8f3d2a10")

EXAMPLE_COLUMNS = (
    "example_id", "conversation_id", "turn_event_id", "feedback_event_id", "tenant", "topic",
    "language", "prompt", "response", "target", "label", "feedback_kind", "rating", "weight",
    "model_version", "ts",
)


@dataclass(frozen=True)
class TurnContext:
    """What a training example needs from a curated assistant turn."""

    event_id: UUID
    conversation_id: str
    tenant: str
    topic: str
    language: str
    prompt: str
    response: str
    model_version: str
    ts: datetime


@dataclass(frozen=True)
class PendingFeedback:
    """Feedback whose turn has not been seen yet; its texts are already redacted."""

    event: FeedbackEvent
    correction: str | None
    arrived_s: float
    #: (topic, partition) of the feedback record, so a revoked partition's entries go.
    source: tuple[str, int] | None = None


def example_row(turn: TurnContext, feedback: PendingFeedback) -> tuple[Any, ...]:
    """One `training_examples` row (in EXAMPLE_COLUMNS order)."""
    event = feedback.event
    if event.kind is FeedbackKind.CORRECTION and feedback.correction:
        label, target = "correction", feedback.correction
    elif event.is_negative:
        label, target = "negative", turn.response
    else:
        label, target = "positive", turn.response
    weight = {"correction": 1.0, "positive": 1.0, "negative": -1.0}[label]
    if event.rating is not None:
        weight = (event.rating - 3) / 2.0 if label != "correction" else 1.0
    example_id = uuid.uuid5(EXAMPLE_NAMESPACE, f"{turn.event_id}:{event.event_id}")
    return (
        example_id, turn.conversation_id, turn.event_id, event.event_id, turn.tenant,
        turn.topic, turn.language, turn.prompt, turn.response, target, label,
        event.kind.value, event.rating, weight, turn.model_version, event.timestamp,
    )


class FeedbackJoin:
    """The in-memory side of the feedback join, with counters of what became of feedback."""

    def __init__(
        self, *, ttl_s: float, max_turns: int, max_pending: int = 5_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._max_turns = max_turns
        self._max_pending = max_pending
        self._clock = clock
        self._turns: OrderedDict[UUID, tuple[TurnContext, float]] = OrderedDict()
        self._rejected: OrderedDict[UUID, float] = OrderedDict()
        self._last_user: OrderedDict[str, tuple[int, str]] = OrderedDict()
        self._pending: OrderedDict[UUID, PendingFeedback] = OrderedDict()
        self._waiting: dict[UUID, set[UUID]] = {}  # turn id -> ids of feedback waiting on it
        #: joined (turn was in memory), early (feedback waited), recovered (from ClickHouse),
        #: turn_rejected (the turn was quarantined), orphan (TTL passed, no turn),
        #: refused (the waiting set was full: the feedback was quarantined instead).
        self.counts: Counter[str] = Counter()
        #: Ids of waiting feedback not yet looked up in the warehouse (see `streams.worker`).
        self.unlooked: set[UUID] = set()

    @property
    def pending(self) -> list[PendingFeedback]:
        return list(self._pending.values())

    def user_turn(self, conversation_id: str, turn_index: int, text: str) -> None:
        """Remember the latest user turn of a conversation, the prompt of the next answer."""
        self._last_user[conversation_id] = (turn_index, text)
        self._last_user.move_to_end(conversation_id)
        while len(self._last_user) > self._max_turns:
            self._last_user.popitem(last=False)

    def prompt_for(self, conversation_id: str, turn_index: int) -> str:
        previous = self._last_user.get(conversation_id)
        return previous[1] if previous and previous[0] < turn_index else ""

    def assistant_turn(self, turn: TurnContext) -> list[tuple[Any, ...]]:
        """Remember a curated assistant turn; returns examples for feedback that waited."""
        self._turns[turn.event_id] = (turn, self._clock())
        self._turns.move_to_end(turn.event_id)
        while len(self._turns) > self._max_turns:
            self._turns.popitem(last=False)
        rows = []
        for feedback_id in sorted(self._waiting.get(turn.event_id, ())):
            rows.append(example_row(turn, self._take(feedback_id)))
            self.counts["early"] += 1
        return rows

    def rejected_turn(self, event_id: UUID) -> None:
        """Remember that a turn was quarantined: its feedback makes no example."""
        self._rejected[event_id] = self._clock()
        while len(self._rejected) > self._max_turns:
            self._rejected.popitem(last=False)
        for feedback_id in list(self._waiting.get(event_id, ())):
            self._take(feedback_id)
            self.counts["turn_rejected"] += 1

    def feedback(self, event: FeedbackEvent, *, correction: str | None,
                 source: tuple[str, int] | None = None) -> tuple[Any, ...] | None:
        """An example row when the rated turn is known; otherwise the feedback waits."""
        if event.event_id in self._pending:  # a replay of feedback restored at start-up
            self._take(event.event_id)
        if event.turn_event_id in self._rejected:
            self.counts["turn_rejected"] += 1
            return None
        known = self._turns.get(event.turn_event_id)
        item = PendingFeedback(event, correction, self._clock(), source)
        if known is not None:
            self.counts["joined"] += 1
            return example_row(known[0], item)
        self._wait(item)
        return None

    def refusal(self, event: FeedbackEvent) -> str | None:
        """Why this feedback cannot wait for its turn (the waiting set is full), or None.

        Only feedback that would wait is refused: a turn in memory or a quarantined turn
        settles it at once. Bounds the memory and the warehouse lookups of the join (a
        flood of feedback for unknown turns once filled both without limit).
        """
        if (len(self._pending) < self._max_pending or event.event_id in self._pending
                or event.turn_event_id in self._turns or event.turn_event_id in self._rejected):
            return None
        self.counts["refused"] += 1
        return (f"its turn {event.turn_event_id} is unknown and {len(self._pending)} "
                f"feedback events already wait for theirs (streams.join_max_pending="
                f"{self._max_pending})")

    def restore(self, items: list[PendingFeedback]) -> None:
        """Wait again for feedback that waited before a restart (see `streams.join_state`).

        At most `max_pending` wait: the newest are kept, the older count as orphans.
        """
        room = max(0, self._max_pending - len(self._pending))
        fresh = [i for i in items if i.event.event_id not in self._pending]
        for item in fresh[-room:] if room else []:
            self._wait(item)
        self.counts["orphan"] += max(0, len(fresh) - room)

    def forget(self, source: tuple[str, int]) -> None:
        """Drop the waiting feedback of a partition this worker no longer owns."""
        for feedback_id in [k for k, v in self._pending.items() if v.source == source]:
            self._take(feedback_id)

    def _wait(self, item: PendingFeedback) -> None:
        self._pending[item.event.event_id] = item
        self.unlooked.add(item.event.event_id)
        self._waiting.setdefault(item.event.turn_event_id, set()).add(item.event.event_id)

    def _take(self, feedback_id: UUID) -> PendingFeedback:
        item = self._pending.pop(feedback_id)
        self.unlooked.discard(feedback_id)
        waiting = self._waiting.get(item.event.turn_event_id)
        if waiting is not None:
            waiting.discard(feedback_id)
            if not waiting:
                del self._waiting[item.event.turn_event_id]
        return item

    def resolve(self, turns: dict[UUID, TurnContext], rejected: set[UUID]) -> list[tuple[Any, ...]]:
        """Join waiting feedback to turns found elsewhere (ClickHouse); returns examples."""
        rows = []
        for feedback_id, item in list(self._pending.items()):
            turn_id = item.event.turn_event_id
            if turn_id in turns:
                rows.append(example_row(turns[turn_id], self._take(feedback_id)))
                self.counts["recovered"] += 1
            elif turn_id in rejected:
                self._take(feedback_id)
                self.counts["turn_rejected"] += 1
        return rows

    def expire(self) -> int:
        """Drop state older than the TTL; returns how many waiting feedbacks became orphans."""
        deadline = self._clock() - self._ttl_s
        while self._turns and next(iter(self._turns.values()))[1] < deadline:
            self._turns.popitem(last=False)
        while self._rejected and next(iter(self._rejected.values())) < deadline:
            self._rejected.popitem(last=False)
        orphans = [k for k, v in self._pending.items() if v.arrived_s < deadline]
        for feedback_id in orphans:
            self._take(feedback_id)
        self.counts["orphan"] += len(orphans)
        return len(orphans)
