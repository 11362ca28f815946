"""The text the private-data detectors read: one plain form of every way to write a digit.

Private data is disguised, on purpose or by a keyboard, in ways the detectors should not
each have to know: digits of other scripts (Arabic-Indic `٤١١١`, fullwidth `４１１１`),
invisible format characters inside a value (a soft hyphen or a left-to-right mark before
the `@`, a zero-width space between digit groups), Unicode dashes and spaces as
separators, a fullwidth `＠`, and JSON escapes in the raw bytes of a refused record
(`\\u0664`, `\\n`). `view_of` folds all of these into one string, and remembers where each
of its characters came from, so that a finding is replaced in the original text: the
text around it is kept as it was written.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

_JSON_ESCAPE = re.compile(r"\\(?:u([0-9A-Fa-f]{4})|([nrt]))")
_DASHES = frozenset("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d")
_ASCII_KEPT = frozenset("@.-/+()")


@dataclass(frozen=True)
class View:
    """A folded copy of a text, with the original span of each of its characters."""

    text: str
    #: Original start and end of each character of `text`; None when they are the same.
    starts: list[int] | None = None
    ends: list[int] | None = None

    def source_span(self, start: int, end: int) -> tuple[int, int]:
        """The span of the original text that `text[start:end]` came from."""
        if self.starts is None or self.ends is None:
            return start, end
        return self.starts[start], self.ends[end - 1]


@lru_cache(maxsize=4096)
def fold(char: str) -> str:
    """The plain form of one non-ASCII character for detection ("" for an invisible one)."""
    category = unicodedata.category(char)
    if category == "Cs":
        # A surrogate (raw, or one half of a JSON-escaped pair such as \ud83d\ude00,
        # which is unfolded one escape at a time) is never part of private data; as
        # U+FFFD it keeps its place and can be encoded.
        return "\ufffd"
    if category == "Cf":
        return ""  # soft hyphen, LRM/RLM, zero-width space and joiners, BOM
    if category == "Nd":
        return str(unicodedata.decimal(char))
    if char in _DASHES:
        return "-"
    if category in ("Zs",):
        return " "
    if category in ("Zl", "Zp"):
        return "\n"
    compat = unicodedata.normalize("NFKC", char)
    if len(compat) == 1 and (compat in _ASCII_KEPT or compat.isalnum() and compat.isascii()):
        return compat  # fullwidth @ . - / + ( ) and letters
    return char


def view_of(text: str) -> View:
    """The folded view of `text` (the text itself when it is ASCII without escapes)."""
    if text.isascii() and "\\" not in text:
        return View(text)
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    position = 0
    escapes = _JSON_ESCAPE.finditer(text) if "\\" in text else iter(())
    escape = next(escapes, None)
    length = len(text)
    while position < length:
        if escape is not None and escape.start() == position:
            code, letter = escape.group(1), escape.group(2)
            char = chr(int(code, 16)) if code else ("\n" if letter == "n" else " ")
            end = escape.end()
            escape = next(escapes, None)
        else:
            if escape is not None and escape.start() < position:
                escape = next(escapes, None)
                continue
            char = text[position]
            end = position + 1
        folded = fold(char) if ord(char) >= 128 else char
        for piece in folded:
            out.append(piece)
            starts.append(position)
            ends.append(end)
        position = end
    return View("".join(out), starts, ends)
