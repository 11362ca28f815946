"""Redaction of people's names where the text says it is a name, from a shipped names list.

No NER model can be loaded here (hub downloads fail at run time, and no installed
package ships one), so this is a precision-minded rule instead of a tagger: a
capitalised word is a name only when

- it follows a cue that introduces a name: "my name is", "I'm", "I am", "this is",
  "call me", "name:", or a sign-off ("Thanks", "Regards", "Cheers", "Best",
  "Sincerely", "Signed"), and
- it is in the first-names list that `gender-guesser` ships (about 61,000 names from
  many countries, read from the package, nothing downloaded), and
- it is not an English function word (the list holds "The", "Here", "Just"...).

A capitalised word right after a matched first name is taken as the surname. Names
mentioned without a cue ("ask John about it") are missed: recall on such text is low by
design, and every redaction the rule makes is very likely a name (measured on the
labeled fixtures in `tests/streams/fixtures/names_*.jsonl`).
"""

from __future__ import annotations

import re
from functools import lru_cache

_WORD = r"[^\W\d_][^\W\d_'’-]*(?:[-'’][^\W\d_]+)?"
# Only the cue is consumed: the name is a lookahead, so that a cue followed by another
# cue ("Thanks, I'm Ana") is still found.
_CUE = re.compile(
    r"(?i:\b(?:my\s+name\s+is|my\s+name's|name\s*:|i\s+am|i'm|i’m|this\s+is|call\s+me"
    r"|thanks|thank\s+you|regards|cheers|best|sincerely|signed))"
    rf"(?=[,:!.]?[ \t]*\n?[ \t]*(?P<first>{_WORD})(?:[ \t]+(?P<last>{_WORD}))?)"
)
#: Lowercased cue words: a text without any of them cannot hold a name by this rule,
#: unless it has whitespace other than single spaces, which the cue pattern also allows
#: between the words of "i am", "this is" and "call me".
_CUE_WORDS = ("name", "i am", "i'm", "i’m", "this is", "call me", "thank", "regards",
              "cheers", "best", "sincerely", "signed")
_OTHER_SPACE = re.compile(r"[^\S ]| {2}")
#: What `\s` matches below 128 besides the space: on ASCII text, a scan for each of
#: these (memchr) is 15 times faster than _OTHER_SPACE over the whole text.
_ASCII_OTHER_SPACE = ("\n", "\t", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f")


@lru_cache(maxsize=1)
def first_names() -> frozenset[str]:
    """The capitalised first names that `gender-guesser` ships, minus English words."""
    from gender_guesser.detector import Detector
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    names = Detector(case_sensitive=True).names
    return frozenset(n for n in names
                     if n[:1].isupper() and n.isalpha() and n.lower() not in ENGLISH_STOP_WORDS)


def _is_name(word: str | None, names: frozenset[str]) -> bool:
    return word is not None and word[:1].isupper() and word in names


def _has_other_space(text: str) -> bool:
    """True when `text` has whitespace other than single spaces."""
    if not text.isascii():
        return _OTHER_SPACE.search(text) is not None
    return "  " in text or any(space in text for space in _ASCII_OTHER_SPACE)


def _is_surname(word: str | None) -> bool:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return (word is not None and word[:1].isupper() and word[1:].islower()
            and word.lower() not in ENGLISH_STOP_WORDS)


def redact_names(text: str, *, lowered: str | None = None) -> tuple[str, int]:
    """`text` with each cued name replaced by `[NAME]`, and how many were replaced.

    Args:
        lowered: `text.lower()`, when the caller has it.
    """
    if lowered is None:
        lowered = text.lower()
    if not any(cue in lowered for cue in _CUE_WORDS) and not _has_other_space(lowered):
        return text, 0
    names = first_names()
    pieces: list[str] = []
    done = 0
    for match in _CUE.finditer(text):
        first, last = match.group("first"), match.group("last")
        start = match.start("first")
        if start < done or not _is_name(first, names):
            continue
        end = match.end("last") if _is_surname(last) else match.end("first")
        pieces += [text[done:start], "[NAME]"]
        done = end
    if not pieces:
        return text, 0
    return "".join(pieces) + text[done:], len(pieces) // 2
