"""Stage 1 of the pipeline: make a turn's text clean, or say why it cannot be.

`clean_text` repairs mojibake (ftfy), normalizes to NFC, strips HTML, collapses
whitespace and enforces length limits. Invisible characters that change how text reads
(bidi overrides, zero-width characters inside words) are refused rather than silently
removed: they are the usual way to smuggle text past filters ("Trojan Source").
"""

from __future__ import annotations

import html
import logging
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import ftfy

from schemas.platform import ReasonCode
from streams.language import classify_many

logger = logging.getLogger(__name__)

#: Bidi embedding, override and isolate controls.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
#: Zero-width characters; U+200D joins emoji and is allowed between two symbols.
ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\ufeff\u180e")
_INVISIBLE = BIDI_CONTROLS | ZERO_WIDTH
_INVISIBLE_SEARCH = re.compile("[" + "".join(sorted(_INVISIBLE)) + "]").search
_BLOCKS = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.I | re.S)
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]{0,500})?/?>|<!--.*?-->", re.S)
_BREAK_TAGS = re.compile(r"<(?:br|/p|/div|/li|/h[1-6])\b[^>]*>", re.I)
_SPACES = re.compile(r"[ \t\f\v\u00a0\u2000-\u200a\u3000]+")
_NEWLINES = re.compile(r"\s*\n\s*(?:\n\s*)+")


@dataclass(frozen=True)
class Rejection:
    """Why a record goes to quarantine, with the scores behind the decision."""

    reasons: tuple[ReasonCode, ...]
    detail: str
    scores: dict[str, float]


@dataclass(frozen=True)
class Cleaned:
    """A turn's text after cleaning, and what was done to it."""

    text: str
    html_stripped: bool
    repaired: bool


def hidden_characters(text: str) -> list[str]:
    """Invisible characters of `text` that change how it reads, as `U+XXXX` names."""
    if text.isascii() or _INVISIBLE_SEARCH(text) is None:
        return []
    found = []
    for index, char in enumerate(text):
        if char not in _INVISIBLE:
            continue
        if char == "\u200d" and 0 < index < len(text) - 1 and _is_symbol(text[index - 1]) \
                and _is_symbol(text[index + 1]):
            continue  # an emoji ZWJ sequence, e.g. a family emoji
        if char == "\ufeff" and index == 0:
            continue  # a byte order mark at the start carries no hidden text
        found.append(f"U+{ord(char):04X}")
    return found


def _is_symbol(char: str) -> bool:
    return unicodedata.category(char) in {"So", "Sk", "Mn"} or 0x1F000 <= ord(char) <= 0x1FFFF


def strip_html(text: str) -> tuple[str, bool]:
    """Text without tags, scripts and styles, entities decoded; and whether it had markup."""
    if "<" not in text and "&" not in text:
        return text, False
    stripped = _BLOCKS.sub(" ", text)
    stripped = _BREAK_TAGS.sub("\n", stripped)
    stripped = _TAG.sub(" ", stripped)
    stripped = html.unescape(stripped)
    return stripped, stripped != text


def collapse_whitespace(text: str) -> str:
    """Runs of spaces become one space; runs of blank lines one blank line; ends trimmed."""
    if "\n" not in text:  # one line (the usual turn): the same result, without the split
        if text.isascii() and "  " not in text and not any(c in text for c in "\t\f\v"):
            return text.strip()  # single spaces only: nothing to collapse
        return _SPACES.sub(" ", text).strip()
    lines = [_SPACES.sub(" ", line).strip() for line in text.replace("\r\n", "\n").split("\n")]
    return _NEWLINES.sub("\n\n", "\n".join(lines)).strip()


def clean_text(text: str, *, min_chars: int, max_chars: int) -> Cleaned | Rejection:
    """Clean one turn's text, or reject it with a reason code.

    Args:
        min_chars: shorter cleaned text is `empty`.
        max_chars: longer cleaned text is `too_long` (checked before and after cleaning).
    """
    if len(text) > max_chars * 4:
        return Rejection((ReasonCode.TOO_LONG,), f"{len(text)} characters before cleaning, "
                         f"over 4 x the {max_chars}-character limit", {"chars": float(len(text))})
    hidden = hidden_characters(text)
    if hidden:
        shown = ", ".join(sorted(set(hidden))[:5])
        return Rejection(
            (ReasonCode.SCHEMA_VIOLATION,),
            f"hidden characters that change how the text reads ({shown}); bidi controls and "
            "zero-width characters are refused, not removed",
            {"hidden_chars": float(len(hidden))},
        )
    repaired = ftfy.fix_text(text, normalization="NFC") if not text.isascii() else text
    stripped, had_html = strip_html(repaired)
    final = collapse_whitespace(unicodedata.normalize("NFC", stripped))
    if len(final) < min_chars:
        return Rejection((ReasonCode.EMPTY,), "no text left after cleaning", {})
    if len(final) > max_chars:
        return Rejection((ReasonCode.TOO_LONG,), f"{len(final)} characters after cleaning, "
                         f"over the {max_chars}-character limit", {"chars": float(len(final))})
    return Cleaned(final, had_html, repaired != text)


def detect_language(text: str, *, sample_chars: int) -> tuple[str, float]:
    """ISO 639-1 code of the text's language and the model's confidence (langid.py's model).

    Only the first `sample_chars` characters are read: enough for a chat turn, and it
    keeps the classifier's cost flat. See `streams.language` for how it is evaluated.
    """
    return detect_languages([text], sample_chars=sample_chars)[0]


def detect_languages(texts: Sequence[str], *, sample_chars: int) -> list[tuple[str, float]]:
    """`detect_language` of each text, the classifier run once for the whole batch."""
    samples = [text[:sample_chars] for text in texts]
    found = iter(classify_many([s for s in samples if _has_letters(s, 3)]))
    return [next(found) if _has_letters(s, 3) else ("und", 0.0) for s in samples]


def _has_letters(text: str, count: int) -> bool:
    for char in text:  # stops at the `count`-th letter, usually within the first word
        if char.isalpha():
            count -= 1
            if count == 0:
                return True
    return False
