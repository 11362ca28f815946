"""The processing pipeline as plain functions over a batch of records: no I/O here.

`Processor.process(records)` takes a batch read from the chat and feedback topics and
returns a `BatchResult`: the rows for each ClickHouse table, the quarantine records (with
their original bytes, for the quarantine topic only) and the ledger. Every input record
gets exactly one outcome: curated, quarantined or error.

Two halves. The stateless stages (`streams.prepare`: size -> UTF-8 -> envelope and
contract -> clean -> PII redaction -> language -> toxicity and identity rules ->
duplicate fingerprint) run a batch at a time, in this process or split across a process
pool (`streams.pool`). The stateful decisions (duplicates against the window, balance
caps, feedback join) then run here, record by record in the batch's order, so the
outcome of a record never depends on how the batch was split.

Replays follow the ledger. The stateful decisions depend on what came before a record,
so a worker that restarts mid-stream, with an empty duplicate window and fresh cap
counters, could decide a record differently from the run that crashed after landing some
of its rows: one event would then sit in two tables. The sink writes the ledger (each
record's outcome) before any other table, and a replayed record whose outcome is logged
gets that outcome again (`process(..., logged=...)`), so its rows land on the keys they
already have.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from schemas.chat import ChatEvent, Role
from schemas.platform import QuarantinedRecord, ReasonCode
from streams.clean import Rejection
from streams.dedup import DuplicateWindow
from streams.join import FeedbackJoin, TurnContext
from streams.prepare import (
    EXCERPT_CHARS,
    Failed,
    Prepared,
    PreparedFeedback,
    PreparedTurn,
    Preparer,
    Rejected,
)
from streams.rows import (
    Record,
    chat_turn_row,
    error_row,
    feedback_row,
    quarantine_row,
)
from streams.safety import UNLABELLED, BalanceCaps

if TYPE_CHECKING:
    from deploy.settings import StreamsSettings

logger = logging.getLogger(__name__)

#: Original bytes kept in a quarantine message; base64 of it must fit Kafka's 1 MB default.
QUARANTINE_ORIGINAL_MAX_BYTES = 512 * 1024
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}")


@dataclass
class BatchResult:
    """Everything one batch produced, ready for the sink and the quarantine topic."""

    turns: list[tuple[Any, ...]] = field(default_factory=list)
    feedback: list[tuple[Any, ...]] = field(default_factory=list)
    examples: list[tuple[Any, ...]] = field(default_factory=list)
    quarantine: list[tuple[Any, ...]] = field(default_factory=list)
    errors: list[tuple[Any, ...]] = field(default_factory=list)
    ledger: list[tuple[Any, ...]] = field(default_factory=list)
    quarantined: list[QuarantinedRecord] = field(default_factory=list)
    #: (stage, outcome) -> records, e.g. ("clean", "empty"), ("sink", "curated").
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: Replayed records whose logged outcome was followed, or could not be (`mismatch`:
    #: a stateless stage now decides otherwise, which only a change of settings explains).
    replays: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class Logged:
    """The outcome a previous run wrote to the ledger for one record."""

    outcome: str  # curated | quarantined | error
    reason: str  # the primary reason code of a quarantine, the error type of an error


class _Quarantine(Exception):
    def __init__(self, stage: str, rejection: Rejection, *, event_id: UUID | None = None,
                 tenant: str | None = None, excerpt: str = "") -> None:
        self.stage, self.rejection = stage, rejection
        self.event_id, self.tenant, self.excerpt = event_id, tenant, excerpt


class Processor:
    """Stateful pipeline for one worker: duplicate windows, caps and the feedback join.

    Args:
        prepare: runs the stateless stages over a batch (e.g. `PreparePool.prepare`);
            by default a `Preparer` in this process.
    """

    def __init__(self, options: StreamsSettings, *, chat_topic: str, feedback_topic: str,
                 prepare: Callable[[list[Record]], list[Prepared]] | None = None) -> None:
        self._options = options
        self._preparer = Preparer(options, chat_topic=chat_topic, feedback_topic=feedback_topic)
        self._prepare = prepare or self._preparer.prepare
        self._caps = BalanceCaps(window_s=options.cap_window_s, share=options.cap_share,
                                 min_records=options.cap_min_records)
        self._windows: dict[tuple[str, int], DuplicateWindow] = {}
        self.join = FeedbackJoin(ttl_s=options.join_ttl_s, max_turns=options.join_max_turns,
                                 max_pending=options.join_max_pending)

    def warm_up(self) -> None:
        """Load the language and toxicity models (seconds) before the first batch."""
        self._preparer.warm_up()

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop the duplicate window and waiting feedback of a partition no longer owned."""
        self._windows.pop((topic, partition), None)
        self.join.forget((topic, partition))

    def process(self, records: list[Record],
                logged: Mapping[tuple[str, int, int], Logged] | None = None) -> BatchResult:
        """Decide the outcome of every record of a batch (in order) and build its rows.

        Args:
            logged: outcomes already in the ledger, by (topic, partition, offset); those
                records get the same outcome again.
        """
        result = BatchResult()
        logged = logged or {}
        for item in self._prepare(records):
            record = item.record
            prior = logged.get((record.topic, record.partition, record.offset))
            try:
                if isinstance(item, PreparedTurn):
                    self._decide_turn(result, item, prior)
                elif isinstance(item, PreparedFeedback):
                    self._decide_feedback(result, item, prior)
                elif isinstance(item, Rejected):
                    self._quarantine(result, item.record, _Quarantine(
                        item.stage, item.rejection, event_id=item.event_id,
                        tenant=item.tenant, excerpt=item.excerpt))
                else:
                    self._error(result, item)
            except _Quarantine as q:
                self._quarantine(result, item.record, q)
            except Exception as e:
                logger.exception("deciding failed on %s[%d]@%d", item.record.topic,
                                 item.record.partition, item.record.offset)
                self._error(result, Failed(item.record, "decide", type(e).__name__,
                                           str(e)[:2000]))
            if prior is not None:
                self._check_replay(result, prior)
        return result

    @staticmethod
    def _check_replay(result: BatchResult, prior: Logged) -> None:
        outcome, reason = result.ledger[-1][4:6]
        if (outcome, reason) == (prior.outcome, prior.reason) or (
                outcome == prior.outcome == "error"):  # an error's message may differ
            result.replays["followed"] += 1
            return
        result.replays["mismatch"] += 1
        logger.warning("%s[%d]@%d was %s (%s) before a restart and is %s (%s) now; the "
                       "settings of a stateless stage changed in between, so the event "
                       "may sit in two tables", *result.ledger[-1][:3], prior.outcome,
                       prior.reason, outcome, reason)

    # -- stages 2 and 3: duplicates, caps, join ------------------------------------------

    def _decide_turn(self, result: BatchResult, c: PreparedTurn, prior: Logged | None) -> None:
        event, verdict = c.event, c.verdict
        if verdict.reasons:
            self._reject_turn(event)
            raise _Quarantine("safety", Rejection(verdict.reasons, verdict.detail,
                              verdict.scores), event_id=event.event_id, tenant=event.tenant,
                              excerpt=c.text[:EXCERPT_CHARS])
        key = (c.record.topic, c.record.partition)
        window = self._windows.get(key)
        if window is None:
            o = self._options
            window = self._windows[key] = DuplicateWindow(
                window_records=o.dedup_window_records, threshold=o.near_dup_threshold,
                min_chars=o.near_dup_min_chars, permutations=o.minhash_permutations)
        if prior is None:
            duplicate = window.check_fingerprint(event.event_id, c.digest, c.signature)
        else:
            duplicate = _logged_reason(prior, _DUPLICATE_REASONS)
            window.remember(event.event_id, c.digest, c.signature, duplicate)
        if duplicate is not None:
            self._reject_turn(event)
            raise _Quarantine("clean", Rejection((duplicate,), "repeats a turn of the window",
                              verdict.scores), event_id=event.event_id, tenant=event.tenant,
                              excerpt=c.text[:EXCERPT_CHARS])
        labelled = event.metadata.get("topic")
        topic = str(labelled or "general")
        keys = {"topic": str(labelled) if labelled else UNLABELLED, "tenant": event.tenant,
                "group": verdict.group}
        if prior is None:
            over = self._caps.admit(keys)
        elif _logged_reason(prior, (ReasonCode.OVER_CAP,)) is not None:
            over = "record"  # which dimension was over is not logged
        else:
            over = None
            self._caps.count(keys)
        if over is not None:
            self._reject_turn(event)
            raise _Quarantine("balance", Rejection(
                (ReasonCode.OVER_CAP,), f"this {over} is over its share of the window "
                f"(streams.cap_share={self._options.cap_share})", verdict.scores),
                event_id=event.event_id, tenant=event.tenant, excerpt=c.text[:EXCERPT_CHARS])
        result.turns.append(chat_turn_row(event, c.record, text=c.text, language=c.language,
                                          topic=topic, toxicity=c.toxicity,
                                          redactions=c.redactions))
        if event.role is Role.USER:
            self.join.user_turn(event.conversation_id, event.turn_index, c.text)
        elif event.role is Role.ASSISTANT:
            context = TurnContext(
                event.event_id, event.conversation_id, event.tenant, topic, c.language,
                self.join.prompt_for(event.conversation_id, event.turn_index), c.text,
                event.model_version or "", event.timestamp)
            result.examples.extend(self.join.assistant_turn(context))
        if c.redactions:
            result.counts[("clean", "redacted")] += 1
        self._curated(result, c.record, event.event_id)

    def _reject_turn(self, event: ChatEvent) -> None:
        if event.role is Role.ASSISTANT:
            self.join.rejected_turn(event.event_id)

    def _decide_feedback(self, result: BatchResult, item: PreparedFeedback,
                         prior: Logged | None) -> None:
        record, event = item.record, item.event
        if prior is None:
            refusal = self.join.refusal(event)
        else:  # a replay: refused again only if it was refused before
            refusal = ("refused before a restart: the waiting set was full"
                       if _logged_reason(prior, (ReasonCode.ORPHAN_FEEDBACK,)) else None)
        if refusal is not None:
            raise _Quarantine("join", Rejection((ReasonCode.ORPHAN_FEEDBACK,), refusal, {}),
                              event_id=event.event_id, tenant=event.tenant)
        result.feedback.append(feedback_row(event, record, correction=item.correction,
                                            comment=item.comment))
        example = self.join.feedback(event, correction=item.correction,
                                     source=(record.topic, record.partition))
        if example is not None:
            result.examples.append(example)
        self._curated(result, record, event.event_id)

    # -- outcomes ------------------------------------------------------------------------

    def _curated(self, result: BatchResult, record: Record, event_id: UUID) -> None:
        result.ledger.append((record.topic, record.partition, record.offset, event_id,
                              "curated", ""))
        result.counts[("sink", "curated")] += 1

    def _quarantine(self, result: BatchResult, record: Record, q: _Quarantine) -> None:
        reasons = list(q.rejection.reasons)
        now = datetime.now(UTC)
        result.quarantine.append(quarantine_row(
            record, reasons=reasons, scores=q.rejection.scores, detail=q.rejection.detail,
            redacted_excerpt=q.excerpt, event_id=q.event_id, tenant=q.tenant, at=now))
        original = record.value[:QUARANTINE_ORIGINAL_MAX_BYTES]
        result.quarantined.append(QuarantinedRecord(
            record_id=record.record_id, original=original,
            original_truncated=len(original) < len(record.value), topic=record.topic,
            partition=record.partition, offset=record.offset, reasons=reasons,
            scores={k: v for k, v in q.rejection.scores.items()},
            detail=q.rejection.detail[:4000], event_id=q.event_id,
            tenant=q.tenant if q.tenant and _is_identifier(q.tenant) else None,
            quarantined_at=now))
        result.ledger.append((record.topic, record.partition, record.offset, q.event_id,
                              "quarantined", reasons[0].value))
        result.counts[(q.stage, reasons[0].value)] += 1

    def _error(self, result: BatchResult, failed: Failed) -> None:
        record = failed.record
        result.errors.append(error_row(record, event_id=failed.event_id, stage=failed.stage,
                                       error_type=failed.error_type, message=failed.message))
        result.ledger.append((record.topic, record.partition, record.offset, failed.event_id,
                              "error", failed.error_type))
        result.counts[(failed.stage, "error")] += 1


_DUPLICATE_REASONS = (ReasonCode.DUPLICATE, ReasonCode.NEAR_DUPLICATE)


def _logged_reason(prior: Logged, reasons: tuple[ReasonCode, ...]) -> ReasonCode | None:
    """The logged quarantine reason when it is one of `reasons`, else None."""
    if prior.outcome != "quarantined":
        return None
    return next((r for r in reasons if r.value == prior.reason), None)


def _is_identifier(value: str) -> bool:
    return _IDENTIFIER.fullmatch(value) is not None
