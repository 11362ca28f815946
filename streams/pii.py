"""Redaction of private data: emails, phone numbers, cards, IBANs, SSNs, IPs, secrets, names.

Each finding is replaced by a typed placeholder (`[EMAIL]`, `[PHONE]`, `[CARD]`, `[IBAN]`,
`[IP]`, `[SECRET]`, `[SSN]`, `[NAME]`) and counted, so analysts see how much was redacted
without ever seeing the value. Patterns are tuned against the labeled fixtures in
`tests/streams/fixtures/` (recall on private data, and no redaction of years, prices,
order numbers or versions in ordinary text; `pii_adversarial*.jsonl` hold the disguised
forms). Numbers are decided by checksums and numbering plans (`streams.pii_numbers`), on
a folded view of the text (`streams.pii_view`); identifiers and metadata are handled by
`streams.pii_fields`. Names are redacted only where the text introduces one ("my name
is", sign-offs...): see `streams.names`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from streams.names import redact_names
from streams.pii_numbers import cards, ibans, number_windows, phones, ssns
from streams.pii_view import View, view_of

# Secrets first: a token can contain digit runs that look like phones or cards.
_SECRET = re.compile(
    r"""
    \b(?:sk|pk|rk)[-_](?:live[-_]|test[-_]|proj[-_])?[A-Za-z0-9_-]{16,}   # OpenAI / Stripe
    | \bAKIA[0-9A-Z]{16}\b                                              # AWS access key id
    | \bgh[pousr]_[A-Za-z0-9]{30,}\b                                    # GitHub tokens
    | \bgithub_pat_[A-Za-z0-9_]{30,}\b
    | \bxox[abprs]-[A-Za-z0-9-]{10,}                                    # Slack
    | \bAIza[0-9A-Za-z_-]{30,}                                          # Google API key
    | \bglpat-[A-Za-z0-9_-]{20,}                                        # GitLab
    | \beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}      # JWT
    | (?i:\bbearer\s+)[A-Za-z0-9._~+/-]{16,}=*
    | (?i:\b(?:api[_ -]?key|access[_ -]?token|auth[_ -]?token|secret(?:[_ -]?key)?
              |password|passwd|token)
         ["']?\s*(?:[:=]|\bis\b)\s*["']?)[^\s"',;]{6,}
    | \b(?=[A-Za-z0-9]*\d)(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{32,}\b     # long random key
    """,
    re.VERBOSE,
)
# The keyword alternative of _SECRET alone, for lowercased ASCII text (no IGNORECASE and
# no leading \b: it is matched where a keyword starts, and the boundary checked there).
_SECRET_KEYWORD_LOWER = re.compile(
    r"""
    (?:api[_ -]?key|access[_ -]?token|auth[_ -]?token|secret(?:[_ -]?key)?|password|passwd
       |token)
    ["']?\s*(?:[:=]|\bis\b)\s*["']?[^\s"',;]{6,}
    """,
    re.VERBOSE,
)
#: The literals the keywords cannot match without (the rarer part of each), and how the
#: keywords holding each one begin ("secret_key" is found by "secret").
_KEYWORD_BEGINNINGS = (("key", ("api",)), ("token", ("access", "auth", "token")),
                       ("secret", ("secret",)), ("passw", ("passw",)))
#: Literal parts of the other alternatives of _SECRET (the case-sensitive ones as written).
_SECRET_MARKERS = ("sk-", "sk_", "pk-", "pk_", "rk-", "rk_", "AKIA", "ghp_", "gho_", "ghu_",
                   "ghs_", "ghr_", "github_pat_", "xox", "AIza", "glpat-", "eyJ")
_LONG_RUN = re.compile(r"[A-Za-z0-9]{32}").search
_DIGIT_SEARCH = re.compile(r"\d").search
_WORD_CHAR = re.compile(r"\w").match
# Unicode letters on both sides (`alice@exämple.com`, `Jürgen@mail.de`), a TLD of letters or
# punycode. Run on the folded view, where a soft hyphen or LRM before the `@` is gone.
_EMAIL = re.compile(
    r"(?<![\w.%+'-])[\w.%+'-]*\w@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+"
    r"(?:[^\W\d_]{2,63}|xn--[a-z0-9-]{1,59})(?![\w-])"
)
_AT_SIGNS = ("@", "\uff20", "\ufe6b")
_EMAIL_LOCAL_MAX = 256
_EMAIL_DOMAIN_MAX = 256
_IPV4 = re.compile(
    r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    r"(?![\d.]\d)", re.ASCII,
)
_IPV6 = re.compile(
    r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}(?![\w:])"
    r"|(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){1,6}:(?:[0-9A-Fa-f]{1,4}:){0,5}[0-9A-Fa-f]{1,4}(?![\w:])"
)
_ASCII_DIGITS = b"0123456789"


def luhn_ok(digits: str) -> bool:
    """True when a digit string passes the Luhn checksum of payment card numbers."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


@dataclass
class Redaction:
    """A redacted text and how many findings of each kind were replaced."""

    text: str
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _sub(pattern: re.Pattern[str], label: str, text: str, counts: Counter[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        counts[label] += 1
        return f"[{label.upper()}]"

    return pattern.sub(replace, text)


def _secrets(text: str, counts: Counter[str], *, lowered: str | None = None,
             has_digit: bool | None = None) -> str:
    # The big alternation costs more than every other pattern together, and plain chat
    # text can match none of it: each alternative but two needs a literal marker, the
    # long random key needs a digit and 32 letters or digits in a row, and the keyword
    # one needs its keyword. Only the keyword one is common, and it runs alone.
    if lowered is None:
        lowered = text.lower()
    if (not text.isascii() or "bearer" in lowered or _has_marker(text)
            or ((_has_digit(text) if has_digit is None else has_digit)
                and _LONG_RUN(text) is not None)):
        return _sub(_SECRET, "secret", text, counts)
    starts = _keyword_starts(lowered)
    if not starts:
        return text
    # ASCII from here on: lower() keeps every position, and IGNORECASE on ASCII text is
    # what matching the lowercased text does. A match starts where one of the keywords
    # starts, so the pattern is tried there only (str.find), not at every letter the
    # engine's scan stops on ("password" alone, with no ": value", is common in chat).
    pieces: list[str] = []
    done = position = 0
    for start in starts:
        if start < position:
            continue  # inside the previous finding
        match = _SECRET_KEYWORD_LOWER.match(lowered, start)
        if match is None or (start > 0 and _WORD_CHAR(lowered, start - 1)):
            continue  # no value, or no word boundary before the keyword
        pieces += [text[done:start], "[SECRET]"]
        counts["secret"] += 1
        done = position = match.end()
    return "".join(pieces) + text[done:] if pieces else text


def _keyword_starts(lowered: str) -> list[int]:
    """Where the keyword alternative of _SECRET can start in `lowered`, in order.

    Each keyword begins with one of these literals, looked for only when the text holds
    the rarer literal of the keyword: "api_key" by "key", "access_token" by "token".
    """
    starts: list[int] = []
    for needed, beginnings in _KEYWORD_BEGINNINGS:
        if needed in lowered:
            for beginning in beginnings:
                index = lowered.find(beginning)
                while index >= 0:
                    starts.append(index)
                    index = lowered.find(beginning, index + 1)
    starts.sort()
    return starts


def _has_digit(text: str) -> bool:
    if text.isascii():  # deleting bytes is a C loop; a regex scan costs ten times more
        data = text.encode("ascii")
        return len(data.translate(None, b"0123456789")) != len(data)
    return _DIGIT_SEARCH(text) is not None


def _has_marker(text: str) -> bool:
    # Every marker but three holds a "-" or "_" (`xox` is always followed by "-").
    if "-" in text or "_" in text:
        return any(marker in text for marker in _SECRET_MARKERS)
    return "AKIA" in text or "AIza" in text or "eyJ" in text


def _may_hold_numbers_or_emails(text: str, has_digit: bool) -> bool:
    if has_digit or "@" in text or "eyJ" in text:
        return True
    if text.isascii():
        return False
    # str.isdigit also takes superscripts and circled digits, which \d does not.
    return any(at in text for at in _AT_SIGNS[1:]) or any(c.isdigit() for c in text)


def _ascii_digit_count(text: str) -> int:
    data = text.encode("utf-8", "surrogatepass")  # a lone surrogate can come from JSON
    return len(data) - len(data.translate(None, _ASCII_DIGITS))


def _find(text: str, *, prefilter: bool = True) -> list[tuple[int, int, str]]:
    """Spans of emails, IBANs, cards, SSNs, IPs and phones in a folded text, in order.

    Each detector masks what it found (same length, so positions hold) before the next
    one runs: an IBAN's digits are not also a phone, nor a card's a second card. With
    `prefilter`, a detector is skipped where its pattern cannot match (too few digits,
    no `@`): the result is the same, which `tests/streams/test_fast_paths.py` checks.
    """
    spans: list[tuple[int, int, str]] = []

    def take(found: Iterable[tuple[int, int, str]]) -> None:
        nonlocal text
        for start, end, label in list(found):
            spans.append((start, end, label))
            text = text[:start] + "\x00" * (end - start) + text[end:]

    if "@" in text or not prefilter:
        take(_emails(text) if prefilter else
             ((m.start(), m.end(), "email") for m in _EMAIL.finditer(text)))
    digits = _ascii_digit_count(text) if prefilter else 99
    # Each number detector reads only around the digits (the masks above hold none).
    windows = number_windows(text) if prefilter else [(0, len(text))]
    if digits >= 8:
        take(ibans(text, windows))
        windows = number_windows(text) if prefilter else windows
    if digits >= 13:
        take(cards(text, windows))
    if digits >= 9:
        take(ssns(text, windows))
    if digits >= 4 and ("." in text or not prefilter):
        take((m.start(), m.end(), "ip") for start, end in windows
             for m in _IPV4.finditer(text, start, end))
    if ":" in text or not prefilter:
        take((m.start(), m.end(), "ip") for m in _IPV6.finditer(text))
    if digits >= 7:
        take(phones(text, windows))
    spans.sort()
    return spans


def _emails(text: str) -> Iterator[tuple[int, int, str]]:
    """Emails, read only around each `@` (at most 256 characters either side)."""
    done = 0
    at = text.find("@")
    while at >= 0:
        start = at  # back to where the local part starts
        while start > done and at - start < _EMAIL_LOCAL_MAX and _is_local(text[start - 1]):
            start -= 1
        for match in _EMAIL.finditer(text, start, at + _EMAIL_DOMAIN_MAX):
            if match.start() <= at < match.end():
                yield match.start(), match.end(), "email"
                done = match.end()
        at = text.find("@", max(at + 1, done))


def _is_local(char: str) -> bool:
    return char.isalnum() or char in "._%+'-"


def replace_spans(text: str, view: View, spans: list[tuple[int, int, str]],
                  substitute: Callable[[int, int, str], str]) -> str:
    """`text` with each span found in its `view` replaced by `substitute(start, end, kind)`
    (view offsets); a span that overlaps one already replaced is skipped."""
    pieces: list[str] = []
    done = 0
    for start, end, label in spans:
        source_start, source_end = view.source_span(start, end)
        if source_start < done:
            continue
        pieces += [text[done:source_start], substitute(start, end, label)]
        done = source_end
    return "".join(pieces) + text[done:] if pieces else text


def may_hold_private(text: str) -> bool:
    """False when `text` cannot hold an email or a private number (no digit, no `@`)."""
    return _may_hold_numbers_or_emails(text, _has_digit(text))


def find_private(text: str) -> tuple[View, list[tuple[int, int, str]]]:
    """The folded view of `text` and the (start, end, kind) of each email or private number
    in it, as positions in the view (`View.source_span` gives them in `text`)."""
    view = view_of(text)
    return view, _find(view.text)


def redact(text: str) -> Redaction:
    """Replace every private datum in `text` by a typed placeholder, counting each kind.

    Each detector runs only when the text has what it needs to match (an `@` for emails,
    13 digits for a card...); placeholders add none of those, so skipping is exact.
    Emails and numbers are found on the folded view of the text (`streams.pii_view`:
    digits of any script, no invisible characters) and replaced in the text as written.
    """
    counts: Counter[str] = Counter()
    has_digit = _has_digit(text)
    full = _may_hold_numbers_or_emails(text, has_digit)
    lowered = text.lower()  # shared by the secret and name rules while nothing changes
    redacted = _secrets(text, counts, lowered=lowered, has_digit=has_digit)
    text, names = redact_names(redacted, lowered=lowered if redacted is text else None)
    if names:
        counts["name"] += names
    if not full:
        # Most chat turns: no digit and no @ leaves only word-like secrets.
        return Redaction(text, counts)
    view, spans = find_private(text)
    if spans:
        def placeholder(_start: int, _end: int, label: str) -> str:
            counts[label] += 1
            return f"[{label.upper()}]"

        text = replace_spans(text, view, spans, placeholder)
    return Redaction(text, counts)
