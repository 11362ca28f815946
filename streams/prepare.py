"""The stateless stages of the pipeline, a batch at a time: decode, clean, redact, score.

`Preparer.prepare(records)` gives one `Prepared` item per record, in order: a turn ready
for the stateful decisions (duplicates, caps, join) with its language, toxicity, safety
verdict and duplicate fingerprint; a feedback event with its cleaned text; a rejection;
or a failure of ours. Nothing here depends on earlier batches, so a batch can be split
across processes (`streams.pool`) and the pieces put back in order.

The classifiers run once per batch, not once per record: language (`classify_many`),
toxicity (one sparse product) and the MinHash signatures (a few numpy expressions).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

import numpy as np
import numpy.typing as npt

from schemas.chat import ChatEvent
from schemas.errors import SchemaValidationError, UnknownSchemaError
from schemas.feedback import FeedbackEvent
from schemas.platform import ReasonCode
from streams.clean import Cleaned, Rejection, clean_text, detect_languages
from streams.decoding import decode_chat, decode_feedback
from streams.dedup import Fingerprinter, word_hash
from streams.pii import redact
from streams.pii_fields import redact_chat_event, redact_feedback_event, redact_identifier
from streams.rows import Record
from streams.safety import SafetyFilter, SafetyVerdict, toxicity_scores
from streams.tokens import WordIds, run_bounds, select_runs
from streams.toxicity import scores_of_ids as toxicity_scores_of_ids

if TYPE_CHECKING:
    from deploy.settings import StreamsSettings

logger = logging.getLogger(__name__)

EXCERPT_CHARS = 500


@dataclass(frozen=True)
class PreparedTurn:
    """A chat turn that passed the stateless stages, with what the decisions need."""

    record: Record
    event: ChatEvent
    text: str
    language: str
    redactions: dict[str, int]
    toxicity: float
    verdict: SafetyVerdict
    #: Exact-duplicate digest, and MinHash signature (None: too short, or already refused).
    digest: bytes
    signature: npt.NDArray[np.uint32] | None


@dataclass(frozen=True)
class PreparedFeedback:
    """A feedback event with its correction and comment cleaned and redacted."""

    record: Record
    event: FeedbackEvent
    correction: str | None
    comment: str | None


@dataclass(frozen=True)
class Rejected:
    """A record the stateless stages refuse: it goes to quarantine."""

    record: Record
    stage: str
    rejection: Rejection
    event_id: UUID | None = None
    tenant: str | None = None
    excerpt: str = ""


@dataclass(frozen=True)
class Failed:
    """A record a stage failed on through a fault of ours: it goes to the errors topic."""

    record: Record
    stage: str
    error_type: str
    message: str
    event_id: UUID | None = None


Prepared = PreparedTurn | PreparedFeedback | Rejected | Failed


class _Refused(Exception):
    def __init__(self, rejected: Rejected) -> None:
        self.rejected = rejected


@dataclass
class _Cleaned:
    record: Record
    event: ChatEvent
    text: str
    redactions: dict[str, int]


class Preparer:
    """Runs the stateless stages over batches of records (one per process)."""

    def __init__(self, options: StreamsSettings, *, chat_topic: str, feedback_topic: str
                 ) -> None:
        self._options = options
        self._chat_topic = chat_topic
        self._feedback_topic = feedback_topic
        self._safety = SafetyFilter(options)
        self._fingerprinter = Fingerprinter(min_chars=options.near_dup_min_chars,
                                            permutations=options.minhash_permutations)
        self._word_ids = WordIds()
        self._pseudonym_key = options.pseudonym_key.get_secret_value().encode()

    def warm_up(self) -> None:
        """Load the language and toxicity models (seconds) before the first batch."""
        detect_languages(["warm up the language model"],
                         sample_chars=self._options.language_sample_chars)
        toxicity_scores(["warm up the toxicity model"])

    def prepare(self, records: list[Record]) -> list[Prepared]:
        """One `Prepared` per record, in the records' order."""
        out: list[Prepared | _Cleaned] = []
        for record in records:
            try:
                out.append(self._decode_and_clean(record))
            except _Refused as r:
                out.append(r.rejected)
            except Exception as e:  # a fault of ours, not of the input
                out.append(_failed(record, "clean", e))
        turns = [item for item in out if isinstance(item, _Cleaned)]
        if turns:
            scored = self._score(turns)
            out = [scored.get(id(item), item) if isinstance(item, _Cleaned) else item
                   for item in out]
        assert not any(isinstance(item, _Cleaned) for item in out)
        return out  # type: ignore[return-value]

    # -- per record: decode, clean, redact -----------------------------------------------

    def _decode_and_clean(self, record: Record) -> PreparedFeedback | _Cleaned:
        options = self._options
        if len(record.value) > options.max_record_bytes:
            raise _Refused(Rejected(record, "decode", Rejection(
                (ReasonCode.TOO_LONG,),
                f"record is {len(record.value)} bytes, over streams.max_record_bytes="
                f"{options.max_record_bytes}", {"bytes": float(len(record.value))}),
                excerpt=excerpt_of(record.value)))
        try:
            record.value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _Refused(Rejected(record, "decode", Rejection(
                (ReasonCode.NOT_UTF8,), f"not valid UTF-8: {e}", {}),
                excerpt=excerpt_of(record.value))) from e
        try:
            event = (decode_chat(record.value) if record.topic == self._chat_topic
                     else decode_feedback(record.value))
        except SchemaValidationError as e:
            code = (ReasonCode.NOT_JSON if any(p.code == "not_json" for p in e.problems)
                    else ReasonCode.SCHEMA_VIOLATION)
            raise _Refused(_unparsed(record, code, str(e), key=self._pseudonym_key)) from e
        except UnknownSchemaError as e:
            raise _Refused(_unparsed(record, ReasonCode.UNKNOWN_SCHEMA, str(e),
                                     key=self._pseudonym_key)) from e
        # Identifiers and metadata hold private data too: they are redacted before any
        # stage or table sees the event (see streams.pii_fields).
        if isinstance(event, FeedbackEvent):
            event = redact_feedback_event(event, key=self._pseudonym_key)
            correction = self._clean_optional(record, event.correction, event)
            comment = self._clean_optional(record, event.comment, event)
            return PreparedFeedback(record, event, correction, comment)
        event, counts = redact_chat_event(event, key=self._pseudonym_key)
        cleaned = clean_text(event.text, min_chars=options.min_chars, max_chars=options.max_chars)
        if isinstance(cleaned, Rejection):
            raise _Refused(Rejected(record, "clean", cleaned, event.event_id, event.tenant,
                                    _redacted_excerpt(event.text)))
        redaction = redact(cleaned.text)
        counts.update(redaction.counts)
        return _Cleaned(record, event, redaction.text, dict(counts))

    def _clean_optional(self, record: Record, text: str | None, event: FeedbackEvent
                        ) -> str | None:
        if text is None:
            return None
        cleaned = clean_text(text, min_chars=1, max_chars=self._options.max_chars)
        if isinstance(cleaned, Rejection):
            raise _Refused(Rejected(record, "clean", cleaned, event.event_id, event.tenant,
                                    _redacted_excerpt(text)))
        assert isinstance(cleaned, Cleaned)
        return redact(cleaned.text).text

    # -- per batch: language, toxicity, identity rules, fingerprints ---------------------

    def _score(self, turns: list[_Cleaned]) -> dict[int, Prepared]:
        options = self._options
        done: dict[int, Prepared] = {}
        try:
            languages = detect_languages([t.text for t in turns],
                                         sample_chars=options.language_sample_chars)
        except Exception as e:
            return {id(t): _failed(t.record, "clean", e, t.event.event_id) for t in turns}
        kept: list[tuple[_Cleaned, str]] = []
        for turn, (language, confidence) in zip(turns, languages, strict=True):
            if options.languages and language not in options.languages:
                done[id(turn)] = Rejected(turn.record, "clean", Rejection(
                    (ReasonCode.LANGUAGE,), f"language {language} is not in streams.languages",
                    {"language_confidence": round(confidence, 4)}), turn.event.event_id,
                    turn.event.tenant, turn.text[:EXCERPT_CHARS])
            else:
                kept.append((turn, language))
        try:
            word_ids, bounds = self._word_ids.ids_of_texts([turn.text.lower() for turn, _ in kept])
            toxicity = toxicity_scores_of_ids([turn.text for turn, _ in kept], word_ids,
                                              bounds, self._word_ids)
            # A turn none of whose words keys a protected group mentions none: its
            # `group_of` needs no set of its words (an empty list answers the same).
            keys = self._word_ids.fact("group_key", self._safety.is_group_key, bool)[word_ids]
            seen_keys = run_bounds(keys)  # keys before each word
            has_key = (seen_keys[bounds[1:]] > seen_keys[bounds[:-1]]).tolist()
            # The word shortcut is exact for ASCII only (IGNORECASE folds other letters).
            verdicts = [self._safety.judge(turn.text, score, words=(
                            (self._word_ids.words_of(word_ids[bounds[i]:bounds[i + 1]]) if key
                             else ()) if turn.text.isascii() else None))
                        for i, ((turn, _), score, key) in enumerate(zip(kept, toxicity, has_key,
                                                                        strict=True))]
        except Exception as e:
            done.update((id(t), _failed(t.record, "safety", e, t.event.event_id))
                        for t, _ in kept)
            return done
        # Refused turns never enter the duplicate window: no fingerprint needed.
        passing = [i for i, verdict in enumerate(verdicts) if not verdict.reasons]
        passing_ids, passing_bounds = select_runs(word_ids, bounds, passing)
        hashes = self._word_ids.fact("word_hash", word_hash, np.uint64)[passing_ids]
        prints = dict(zip(passing, self._fingerprinter.fingerprints_of_hashes(
            [kept[i][0].text for i in passing], hashes, passing_bounds.tolist()), strict=True))
        for i, ((turn, language), score, verdict) in enumerate(
                zip(kept, toxicity, verdicts, strict=True)):
            digest, signature = prints.get(i, (b"", None))
            done[id(turn)] = PreparedTurn(turn.record, turn.event, turn.text, language,
                                          turn.redactions, score, verdict, digest, signature)
        return done


def _failed(record: Record, stage: str, error: Exception, event_id: UUID | None = None
            ) -> Failed:
    logger.exception("stage %s failed on %s[%d]@%d", stage, record.topic, record.partition,
                     record.offset)
    # An error's message can quote the input it failed on.
    return Failed(record, stage, type(error).__name__, redact(str(error)[:2000]).text, event_id)


def _unparsed(record: Record, code: ReasonCode, detail: str, *, key: bytes) -> Rejected:
    event_id, tenant = _ids_of(record.value)
    if tenant is not None:
        tenant = redact_identifier(tenant, key=key)
    # A contract's message can quote the value it refused.
    return Rejected(record, "decode", Rejection((code,), redact(detail).text, {}), event_id,
                    tenant, excerpt_of(record.value))


#: Redaction reads this far past an excerpt's end, so a datum the cut would halve is found
#: whole (a card in JSON escapes is 96 characters).
_EXCERPT_MARGIN_CHARS = 200


def _redacted_excerpt(text: str) -> str:
    return redact(text[:EXCERPT_CHARS + _EXCERPT_MARGIN_CHARS]).text[:EXCERPT_CHARS]


def excerpt_of(value: bytes) -> str:
    """A redacted excerpt of a record's bytes, for the quarantine table."""
    chars = EXCERPT_CHARS + _EXCERPT_MARGIN_CHARS
    return _redacted_excerpt(value[:chars * 2].decode("utf-8", "replace")[:chars])


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
