"""Curated time windows `[start, end)` from ClickHouse, split by conversation.

Two sources, read with FINAL so replayed inserts count once:
- `training_examples`: examples the stream processors labeled;
- `chat_turns`: each assistant turn with the user turn before it, its target replaced by
  the user's correction when there is one.
Rows whose turn (or user turn) was quarantined are never returned. Thumbs-down and
flagged answers are never trained on; they are kept as negatives for the gate. Exact
duplicates are dropped, each topic is capped, and whole conversations go to either the
training or the validation split, so nothing leaks between them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from schemas.platform import DatasetSnapshot
from trainer.errors import EmptyWindowError, TrainerConfigError
from trainer.packing import TextExample

if TYPE_CHECKING:
    from deploy.settings import FlywheelSettings

logger = logging.getLogger(__name__)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
NEGATIVE_FEEDBACK = ("thumbs_down", "flag")
NEGATIVE_LABELS = ("negative", "rejected")

_QUERY = """\
WITH
    quarantined AS (
        SELECT assumeNotNull(event_id) AS id FROM {db}.quarantine FINAL
        WHERE event_id IS NOT NULL
    ),
    fb AS (
        SELECT
            turn_event_id,
            countIf(kind = 'correction') > 0 AS corrected,
            argMaxIf(assumeNotNull(correction), ts, kind = 'correction') AS correction,
            countIf(kind IN ('thumbs_down', 'flag')) > 0 AS disliked,
            countIf(kind = 'thumbs_up') > 0 AS liked
        FROM {db}.feedback FINAL
        GROUP BY turn_event_id
    )
SELECT * FROM (
    SELECT
        toString(e.example_id) AS id, e.conversation_id AS conversation_id, e.topic AS topic,
        e.prompt AS prompt, e.response AS response,
        if(e.target = '', e.response, e.target) AS target,
        if(e.label IN ('negative', 'rejected'), 'thumbs_down', e.feedback_kind) AS feedback,
        toFloat64(e.weight) AS weight, e.ts AS ts,
        '' AS source_topic, toUInt32(0) AS source_partition, toUInt64(0) AS source_offset
    FROM {db}.training_examples AS e FINAL
    WHERE e.ts >= {start} AND e.ts < {end} AND e.weight > 0
      AND e.turn_event_id NOT IN (SELECT id FROM quarantined)
    UNION ALL
    SELECT
        toString(a.event_id), a.conversation_id, a.topic, u.text, a.text,
        if(fb.corrected, fb.correction, a.text),
        multiIf(fb.corrected, 'correction', fb.disliked, 'thumbs_down',
                fb.liked, 'thumbs_up', ''),
        multiIf(fb.corrected, 2.0, fb.liked, 1.5, 1.0), a.ts,
        toString(a.source_topic), a.source_partition, a.source_offset
    FROM {db}.chat_turns AS a FINAL
    INNER JOIN (SELECT * FROM {db}.chat_turns FINAL WHERE role = 'user') AS u
        ON u.tenant = a.tenant AND u.conversation_id = a.conversation_id
       AND u.turn_index + 1 = a.turn_index
    LEFT JOIN fb ON fb.turn_event_id = a.event_id
    WHERE a.role = 'assistant' AND a.ts >= {start} AND a.ts < {end}
      AND a.event_id NOT IN (SELECT id FROM quarantined)
      AND u.event_id NOT IN (SELECT id FROM quarantined)
      AND a.event_id NOT IN (
          SELECT turn_event_id FROM {db}.training_examples FINAL
          WHERE ts >= {start} AND ts < {end}
      )
)
ORDER BY conversation_id, ts, id"""

_COLUMNS = ("id", "conversation_id", "topic", "prompt", "response", "target", "feedback",
            "weight", "ts", "source_topic", "source_partition", "source_offset")


@dataclass(frozen=True)
class Example:
    """One trainable exchange of the window."""

    id: str
    conversation_id: str
    topic: str
    prompt: str
    response: str
    target: str
    feedback: str
    weight: float
    ts: datetime
    source_topic: str = ""
    source_partition: int = 0
    source_offset: int = 0

    @property
    def is_negative(self) -> bool:
        return self.feedback in NEGATIVE_FEEDBACK

    def text_example(self) -> TextExample:
        return TextExample(self.prompt, self.target, self.weight)


@dataclass(frozen=True)
class Window:
    """A window's examples, split, with the snapshot that reproduces it."""

    start: datetime
    end: datetime
    train: list[Example]
    validation: list[Example]
    negatives: list[Example]
    snapshot: DatasetSnapshot
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def corrections(self) -> list[Example]:
        """Validation examples whose target is a user's correction (for BLEU and chrF)."""
        return [e for e in self.validation if e.feedback == "correction"]


def check_bounds(start: datetime, end: datetime) -> None:
    """Raises: TrainerConfigError: the window is empty or its bounds lack a time zone."""
    if start.tzinfo is None or end.tzinfo is None:
        raise TrainerConfigError("window bounds need a time zone; pass UTC datetimes")
    if end <= start:
        raise TrainerConfigError(
            f"the window [{start.isoformat()}, {end.isoformat()}) is empty: its end must be "
            "after its start"
        )


def window_query(settings: FlywheelSettings, start: datetime, end: datetime) -> str:
    """The exact SQL that selects a window (recorded in the dataset snapshot).

    Raises:
        TrainerConfigError: the database name is not an identifier, or the window is empty.
    """
    check_bounds(start, end)
    db = settings.clickhouse.database
    if not _IDENTIFIER.match(db):
        raise TrainerConfigError(f"clickhouse.database {db!r} is not a plain identifier")
    return _QUERY.format(db=db, start=_literal(start), end=_literal(end))


def _literal(moment: datetime) -> str:
    text = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return f"toDateTime64('{text}', 3, 'UTC')"


def latest_closed_window(
    now: datetime, *, window_s: int, grace_s: int = 0
) -> tuple[datetime, datetime]:
    """The last aligned window `[k*window_s, (k+1)*window_s)` closed `grace_s` before `now`."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    closed = (now - timedelta(seconds=grace_s) - epoch).total_seconds()
    k = int(closed // window_s)
    end = epoch + timedelta(seconds=k * window_s)
    return end - timedelta(seconds=window_s), end


def read_window(
    client: Any, settings: FlywheelSettings, start: datetime, end: datetime
) -> Window:
    """Select, clean and split the window.

    Raises:
        TrainerConfigError: the bounds are empty or not time-zone aware.
        EmptyWindowError: nothing trainable is left (the message says what was dropped).
    """
    trainer = settings.trainer
    query = window_query(settings, start, end)
    rows = [Example(**dict(zip(_COLUMNS, row, strict=True)))
            for row in client.query(query).result_rows]
    dropped: dict[str, int] = defaultdict(int)
    seen: set[tuple[str, str]] = set()
    kept: list[Example] = []
    negatives: list[Example] = []
    for row in rows:
        if row.is_negative:
            dropped["thumbs_down"] += 1
            if trainer.thumbs_down == "negative":
                negatives.append(row)
            continue
        key = (row.prompt.strip(), row.target.strip())
        if key in seen or not key[0] or not key[1]:
            dropped["duplicate" if key in seen else "empty"] += 1
            continue
        seen.add(key)
        kept.append(row)
    kept = _cap_topics(kept, cap=trainer.max_examples_per_topic, seed=trainer.seed,
                       dropped=dropped)
    train, validation = split_by_conversation(
        kept, validation_fraction=trainer.validation_fraction, seed=trainer.seed)
    if not train or not validation:
        raise EmptyWindowError(
            f"the window [{start.isoformat()}, {end.isoformat()}) has {len(rows)} rows and "
            f"{len(kept)} trainable examples in {len({e.conversation_id for e in kept})} "
            f"conversations (dropped: {dict(dropped) or 'none'}); at least two conversations "
            "are needed for a training and a validation split. Choose a wider window or wait "
            "for more data"
        )
    snapshot = DatasetSnapshot(
        window_start=start, window_end=end, query=query,
        train_rows=len(train), validation_rows=len(validation),
        content_sha256=content_hash(train + validation), kafka_offsets=_offsets(kept),
    )
    logger.info("window %s..%s: %d train, %d validation, %d negatives, dropped %s",
                start, end, len(train), len(validation), len(negatives), dict(dropped))
    return Window(start, end, train, validation, negatives, snapshot, dict(dropped))


def _cap_topics(rows: list[Example], *, cap: int, seed: int,
                dropped: dict[str, int]) -> list[Example]:
    by_topic: dict[str, list[Example]] = defaultdict(list)
    for row in rows:
        by_topic[row.topic].append(row)
    keep: set[str] = set()
    for items in by_topic.values():
        ranked = sorted(items, key=lambda e: _hash(f"{seed}:cap:{e.id}"))
        keep.update(e.id for e in ranked[:cap])
        dropped["over_cap"] += max(0, len(items) - cap)
    if not dropped["over_cap"]:
        del dropped["over_cap"]
    return [r for r in rows if r.id in keep]


def split_by_conversation(
    rows: list[Example], *, validation_fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Whole conversations to validation by a seeded hash of their id; never split one.

    With two or more conversations both splits are non-empty.
    """
    conversations = sorted({r.conversation_id for r in rows},
                           key=lambda c: _hash(f"{seed}:split:{c}"))
    n_val = round(len(conversations) * validation_fraction)
    if len(conversations) >= 2:
        n_val = min(max(n_val, 1), len(conversations) - 1)
    held = set(conversations[:n_val])
    return ([r for r in rows if r.conversation_id not in held],
            [r for r in rows if r.conversation_id in held])


def content_hash(rows: list[Example]) -> str:
    """SHA-256 over the rows' ids and texts, in order."""
    digest = hashlib.sha256()
    for r in rows:
        digest.update(json.dumps([r.id, r.conversation_id, r.prompt, r.target, r.weight],
                                 ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _offsets(rows: list[Example]) -> dict[str, dict[int, tuple[int, int]]]:
    out: dict[str, dict[int, tuple[int, int]]] = {}
    for r in rows:
        if not r.source_topic:
            continue
        parts = out.setdefault(r.source_topic, {})
        low, high = parts.get(r.source_partition, (r.source_offset, r.source_offset))
        parts[r.source_partition] = (min(low, r.source_offset), max(high, r.source_offset))
    return out


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def count_examples(client: Any, settings: FlywheelSettings, start: datetime,
                   end: datetime) -> int:
    """How many rows the window query would return, before cleaning (cheap, for `watch`)."""
    query = window_query(settings, start, end).rsplit("ORDER BY", 1)[0]
    return int(client.query(f"SELECT count() FROM ({query})").result_rows[0][0])
