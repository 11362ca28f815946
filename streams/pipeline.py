"""The processing pipeline as plain functions over a batch of records: no I/O here.

`Processor.process(records)` takes a batch read from the chat and feedback topics and
returns a `BatchResult`: the rows for each ClickHouse table, the quarantine records (with
their original bytes, for the quarantine topic only) and the ledger. Every input record
gets exactly one outcome: curated, quarantined or error.

Order within a record: size -> UTF-8 -> envelope and contract -> clean (mojibake, NFC,
HTML, whitespace, hidden characters, length) -> PII redaction -> language ->
toxicity and identity rules (scored for the whole batch at once) -> duplicates ->
balance caps -> feedback join.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from schemas.chat import ChatEvent, Role
from schemas.envelope import decode
from schemas.errors import SchemaValidationError, UnknownSchemaError
from schemas.feedback import FeedbackEvent
from schemas.platform import QuarantinedRecord, ReasonCode
from streams.clean import Cleaned, Rejection, clean_text, detect_language
from streams.decoding import decode_chat
from streams.dedup import DuplicateWindow
from streams.join import FeedbackJoin, TurnContext
from streams.pii import redact
from streams.rows import (
    Record,
    chat_turn_row,
    error_row,
    feedback_row,
    quarantine_row,
)
from streams.safety import BalanceCaps, SafetyFilter, toxicity_scores
from streams.tokens import words

if TYPE_CHECKING:
    from deploy.settings import StreamsSettings

logger = logging.getLogger(__name__)

#: Original bytes kept in a quarantine message; base64 of it must fit Kafka's 1 MB default.
QUARANTINE_ORIGINAL_MAX_BYTES = 512 * 1024
EXCERPT_CHARS = 500


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


@dataclass
class _Candidate:
    record: Record
    event: ChatEvent
    text: str
    language: str
    redactions: dict[str, int]
    #: `\w+` runs of the lowercased text, shared by toxicity, identity rules and dedup.
    words: list[str]
    ascii: bool


class _Quarantine(Exception):
    def __init__(self, stage: str, rejection: Rejection, *, event_id: UUID | None = None,
                 tenant: str | None = None, excerpt: str = "") -> None:
        self.stage, self.rejection = stage, rejection
        self.event_id, self.tenant, self.excerpt = event_id, tenant, excerpt


class Processor:
    """Stateful pipeline for one worker: duplicate windows, caps and the feedback join."""

    def __init__(self, options: StreamsSettings, *, chat_topic: str, feedback_topic: str) -> None:
        self._options = options
        self._chat_topic = chat_topic
        self._feedback_topic = feedback_topic
        self._safety = SafetyFilter(options)
        self._caps = BalanceCaps(window_s=options.cap_window_s, share=options.cap_share,
                                 min_records=options.cap_min_records)
        self._windows: dict[tuple[str, int], DuplicateWindow] = {}
        self.join = FeedbackJoin(ttl_s=options.join_ttl_s, max_turns=options.join_max_turns)

    def warm_up(self) -> None:
        """Load the language and toxicity models (seconds) before the first batch."""
        detect_language("warm up the language model",
                        sample_chars=self._options.language_sample_chars)
        toxicity_scores(["warm up the toxicity model"])

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop the duplicate window and waiting feedback of a partition no longer owned."""
        self._windows.pop((topic, partition), None)
        self.join.forget((topic, partition))

    def process(self, records: list[Record]) -> BatchResult:
        """Decide the outcome of every record of a batch (in order) and build its rows."""
        result = BatchResult()
        prepared: list[_Candidate | tuple[Record, FeedbackEvent, str | None, str | None]
                       | None] = []
        for record in records:
            try:
                prepared.append(self._prepare(record))
            except _Quarantine as q:
                self._quarantine(result, record, q)
                prepared.append(None)
            except Exception as e:  # a fault of ours, not of the input
                self._error(result, record, "clean", e)
                prepared.append(None)
        candidates = [p for p in prepared if isinstance(p, _Candidate)]
        try:
            scores = toxicity_scores([c.text for c in candidates],
                                     tokens=[c.words for c in candidates])
        except Exception as e:
            for c in candidates:
                self._error(result, c.record, "safety", e, event_id=c.event.event_id)
            prepared = [p for p in prepared if not isinstance(p, _Candidate)]
            scores = []
        toxicity = dict(zip((id(c) for c in candidates), scores, strict=False))
        for item in prepared:
            if item is None:
                continue
            record = item.record if isinstance(item, _Candidate) else item[0]
            try:
                if isinstance(item, _Candidate):
                    self._decide_turn(result, item, toxicity[id(item)])
                else:
                    self._decide_feedback(result, *item)
            except _Quarantine as q:
                self._quarantine(result, record, q)
            except Exception as e:
                self._error(result, record, "decide", e)
        return result

    # -- stage 1: decode and clean -------------------------------------------------------

    def _prepare(
        self, record: Record
    ) -> _Candidate | tuple[Record, FeedbackEvent, str | None, str | None]:
        options = self._options
        if len(record.value) > options.max_record_bytes:
            raise _Quarantine("decode", Rejection(
                (ReasonCode.TOO_LONG,),
                f"record is {len(record.value)} bytes, over streams.max_record_bytes="
                f"{options.max_record_bytes}", {"bytes": float(len(record.value))}),
                excerpt=_excerpt(record.value))
        try:
            record.value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _Quarantine("decode", Rejection((ReasonCode.NOT_UTF8,),
                              f"not valid UTF-8: {e}", {}), excerpt=_excerpt(record.value)) from e
        try:
            event = (decode_chat(record.value) if record.topic == self._chat_topic
                     else decode(record.value, expect=FeedbackEvent).payload)
        except SchemaValidationError as e:
            code = (ReasonCode.NOT_JSON if any(p.code == "not_json" for p in e.problems)
                    else ReasonCode.SCHEMA_VIOLATION)
            raise self._unparsed(record, code, str(e)) from e
        except UnknownSchemaError as e:
            raise self._unparsed(record, ReasonCode.UNKNOWN_SCHEMA, str(e)) from e
        if isinstance(event, FeedbackEvent):
            correction = self._clean_optional(event.correction, event)
            comment = self._clean_optional(event.comment, event)
            return record, event, correction, comment
        assert isinstance(event, ChatEvent)
        cleaned = clean_text(event.text, min_chars=options.min_chars, max_chars=options.max_chars)
        if isinstance(cleaned, Rejection):
            raise _Quarantine("clean", cleaned, event_id=event.event_id, tenant=event.tenant,
                              excerpt=redact(event.text[:EXCERPT_CHARS]).text)
        redaction = redact(cleaned.text)
        language, confidence = detect_language(redaction.text,
                                               sample_chars=options.language_sample_chars)
        if options.languages and language not in options.languages:
            raise _Quarantine("clean", Rejection(
                (ReasonCode.LANGUAGE,), f"language {language} is not in streams.languages",
                {"language_confidence": round(confidence, 4)}), event_id=event.event_id,
                tenant=event.tenant, excerpt=redaction.text[:EXCERPT_CHARS])
        lowered = redaction.text.lower()
        return _Candidate(record, event, redaction.text, language, dict(redaction.counts),
                          words(lowered), redaction.text.isascii())

    def _clean_optional(self, text: str | None, event: FeedbackEvent) -> str | None:
        if text is None:
            return None
        cleaned = clean_text(text, min_chars=1, max_chars=self._options.max_chars)
        if isinstance(cleaned, Rejection):
            raise _Quarantine("clean", cleaned, event_id=event.event_id, tenant=event.tenant,
                              excerpt=redact(text[:EXCERPT_CHARS]).text)
        assert isinstance(cleaned, Cleaned)
        return redact(cleaned.text).text

    def _unparsed(self, record: Record, code: ReasonCode, detail: str) -> _Quarantine:
        event_id, tenant = _ids_of(record.value)
        return _Quarantine("decode", Rejection((code,), detail, {}), event_id=event_id,
                           tenant=tenant, excerpt=_excerpt(record.value))

    # -- stages 2 and 3: safety, duplicates, caps, join ----------------------------------

    def _decide_turn(self, result: BatchResult, c: _Candidate, toxicity: float) -> None:
        event = c.event
        # The word shortcut is exact for ASCII only (IGNORECASE folds some other letters).
        verdict = self._safety.judge(c.text, toxicity, words=c.words if c.ascii else None)
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
        duplicate = window.check(event.event_id, c.text, words=c.words)
        if duplicate is not None:
            self._reject_turn(event)
            raise _Quarantine("clean", Rejection((duplicate,), "repeats a turn of the window",
                              verdict.scores), event_id=event.event_id, tenant=event.tenant,
                              excerpt=c.text[:EXCERPT_CHARS])
        topic = str(event.metadata.get("topic") or "general")
        over = self._caps.admit({"topic": topic, "tenant": event.tenant, "group": verdict.group})
        if over is not None:
            self._reject_turn(event)
            raise _Quarantine("balance", Rejection(
                (ReasonCode.OVER_CAP,), f"this {over} is over its share of the window "
                f"(streams.cap_share={self._options.cap_share})", verdict.scores),
                event_id=event.event_id, tenant=event.tenant, excerpt=c.text[:EXCERPT_CHARS])
        result.turns.append(chat_turn_row(event, c.record, text=c.text, language=c.language,
                                          topic=topic, toxicity=toxicity,
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

    def _decide_feedback(self, result: BatchResult, record: Record, event: FeedbackEvent,
                         correction: str | None, comment: str | None) -> None:
        result.feedback.append(feedback_row(event, record, correction=correction,
                                            comment=comment))
        example = self.join.feedback(event, correction=correction,
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

    def _error(self, result: BatchResult, record: Record, stage: str, error: Exception, *,
               event_id: UUID | None = None) -> None:
        logger.exception("stage %s failed on %s[%d]@%d", stage, record.topic, record.partition,
                         record.offset)
        result.errors.append(error_row(record, event_id=event_id, stage=stage, error=error))
        result.ledger.append((record.topic, record.partition, record.offset, event_id,
                              "error", type(error).__name__))
        result.counts[(stage, "error")] += 1


def _excerpt(value: bytes) -> str:
    return redact(value[:EXCERPT_CHARS * 2].decode("utf-8", "replace")[:EXCERPT_CHARS]).text


def _ids_of(value: bytes) -> tuple[UUID | None, str | None]:
    """event_id and tenant of a record that broke its contract, when they can be read."""
    try:
        payload = json.loads(value).get("payload") or {}
        event_id = payload.get("event_id")
        tenant = payload.get("tenant")
        return (UUID(event_id) if isinstance(event_id, str) else None,
                tenant if isinstance(tenant, str) else None)
    except (ValueError, AttributeError, TypeError):
        return None, None


def _is_identifier(value: str) -> bool:
    import re

    return bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}", value))
