"""Private data outside the text: identifiers and metadata of chat and feedback events.

Free text gets typed placeholders (`streams.pii.redact`). Identifiers cannot: the
contracts accept an email as a `tenant` or `conversation_id` (`@`, `.` and `+` are valid
identifier characters), and these ids key the join of feedback to turns, the balance
caps and every per-tenant figure. A placeholder would merge every such conversation
into one, and refusing the event would lose a valid turn for a choice its client made.
So each private datum inside an identifier is replaced by a keyed pseudonym,
`email-<16 hex>` (HMAC-SHA-256 under `streams.pseudonym_key`): the same value always gives
the same pseudonym, in every worker and every table, so joins and counts hold, and
without the key a guess ("is this alice@example.com?") cannot be confirmed, which a plain
hash would allow. The result is still a valid identifier.

Metadata values are free text and get placeholders; metadata keys are identifiers.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter
from functools import lru_cache
from typing import Any

from schemas.base import MAX_ID_CHARS
from schemas.chat import ChatEvent
from schemas.feedback import FeedbackEvent
from streams.pii import find_private, may_hold_private, redact, replace_spans

_PSEUDONYM_HEX = 16
_PART_SEPARATORS = frozenset("-_:/")


def pseudonym(value: str, *, kind: str, key: bytes) -> str:
    """The keyed pseudonym of one private datum: `<kind>-<16 hex of HMAC-SHA-256>`."""
    digest = hmac.new(key, value.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return f"{kind}-{digest.hexdigest()[:_PSEUDONYM_HEX]}"


@lru_cache(maxsize=8192)
def redact_identifier(value: str, *, key: bytes) -> str:
    """`value` with each private datum in it replaced by its keyed pseudonym.

    An identifier holding none is returned as it is (most: no `@` and few digits).
    """
    if not may_hold_private(value):
        return value
    view, spans = find_private(value)
    # Parts of an identifier are joined by - _ : / ("tenant-4155552671"), which in text
    # would make a number part of a range or a path: read them as spaces, emails aside.
    spaced = list(view.text)
    for start, end, _ in spans:
        spaced[start:end] = "\x00" * (end - start)
    parts = "".join(" " if c in _PART_SEPARATORS else c for c in spaced)
    if parts != view.text:
        spans = sorted(spans + find_private(parts)[1])
    if not spans:
        return value
    out = replace_spans(value, view, spans, lambda start, end, label: pseudonym(
        view.text[start:end], kind=label, key=key))
    if len(out) > MAX_ID_CHARS or not out[:1].isalnum():
        return pseudonym(value, kind="id", key=key)
    return out


def redact_metadata(metadata: dict[str, Any], *, key: bytes
                    ) -> tuple[dict[str, Any], Counter[str]]:
    """Metadata with private data removed from keys (pseudonyms) and values (placeholders).

    A value that held private data comes back as the redacted string (a card number sent as
    an integer too); the others as they were. Returns the counts of what values held.
    """
    counts: Counter[str] = Counter()
    if not metadata:
        return metadata, counts
    out: dict[str, Any] = {}
    changed = False
    for name, value in metadata.items():
        safe_name = redact_identifier(name, key=key)
        if value is not None and not isinstance(value, bool):
            text = value if isinstance(value, str) else str(value)
            if may_hold_private(text):
                redaction = redact(text)
                if redaction.total:
                    counts.update(redaction.counts)
                    value = redaction.text
        changed = changed or safe_name != name or value is not metadata[name]
        out[safe_name] = value
    return (out if changed else metadata), counts


def redact_chat_event(event: ChatEvent, *, key: bytes) -> tuple[ChatEvent, Counter[str]]:
    """The event with its identifiers pseudonymised and its metadata redacted.

    The text is not touched here (it is cleaned first, then redacted). Returns the counts
    of what the metadata held.
    """
    metadata, counts = redact_metadata(event.metadata, key=key)
    update: dict[str, Any] = {}
    for name in ("conversation_id", "tenant", "model", "model_version"):
        value = getattr(event, name)
        if value is not None:
            safe = redact_identifier(value, key=key)
            if safe != value:
                update[name] = safe
    if metadata is not event.metadata:
        update["metadata"] = metadata
    return (event.model_copy(update=update) if update else event), counts


def redact_feedback_event(event: FeedbackEvent, *, key: bytes) -> FeedbackEvent:
    """The feedback event with its identifiers pseudonymised (texts are redacted apart)."""
    update = {}
    for name in ("conversation_id", "tenant", "model_version"):
        value = getattr(event, name, None)
        if isinstance(value, str):
            safe = redact_identifier(value, key=key)
            if safe != value:
                update[name] = safe
    return event.model_copy(update=update) if update else event
