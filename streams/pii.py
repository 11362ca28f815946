"""Redaction of private data: emails, phone numbers, card numbers, IP addresses, secrets.

Each finding is replaced by a typed placeholder (`[EMAIL]`, `[PHONE]`, `[CARD]`, `[IP]`,
`[SECRET]`, `[SSN]`) and counted, so analysts see how much was redacted without ever
seeing the value. Patterns are tuned against the labeled fixtures in
`tests/streams/fixtures/` (recall on private data, and no redaction of years, prices,
order numbers or versions in ordinary text).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

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
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_SSN = re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b")
# 13-19 digits, optionally grouped by spaces or dashes; kept only if the Luhn check passes.
_CARD = re.compile(r"(?<![\d.,])\d(?:[ -]?\d){12,18}(?![\d.,]|-\d)")
_IPV4 = re.compile(
    r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    r"(?![\d.]\d)"
)
_IPV6 = re.compile(
    r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}(?![\w:])"
    r"|(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){1,6}:(?:[0-9A-Fa-f]{1,4}:){0,5}[0-9A-Fa-f]{1,4}(?![\w:])"
)
# Phones: an international prefix, or a bracketed area code, or 3 separated digit groups;
# 9 to 15 digits in all (years, prices and dates never have that shape).
_PHONE = re.compile(
    r"""
    (?<![\w+.])
    (?:
        \+\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{1,4}(?:[\s.-]?\d{2,4}){1,4}
      | \(\d{2,4}\)[\s.-]?\d{3,4}[\s.-]?\d{3,4}
      | \b0\d{2,4}[\s.-]\d{3,4}[\s.-]?\d{3,4}
      | \b\d{3}[\s.-]\d{3}[\s.-]\d{4}
      | \b0\d{9,10}\b
    )
    (?![\w.]\d|\d)
    """,
    re.VERBOSE,
)


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


def _cards(text: str, counts: Counter[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            counts["card"] += 1
            return "[CARD]"
        return match.group()

    return _CARD.sub(replace, text)


def _phones(text: str, counts: Counter[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        digits = sum(c.isdigit() for c in match.group())
        if 9 <= digits <= 15:
            counts["phone"] += 1
            return "[PHONE]"
        return match.group()

    return _PHONE.sub(replace, text)


def redact(text: str) -> Redaction:
    """Replace every private datum in `text` by a typed placeholder, counting each kind."""
    counts: Counter[str] = Counter()
    if not any(c.isdigit() or c == "@" for c in text) and "eyJ" not in text:
        # Fast path for most chat turns: no digit and no @ leaves only word-like secrets.
        return Redaction(_sub(_SECRET, "secret", text, counts), counts)
    text = _sub(_SECRET, "secret", text, counts)
    text = _sub(_EMAIL, "email", text, counts)
    text = _sub(_SSN, "ssn", text, counts)
    text = _cards(text, counts)
    text = _sub(_IPV4, "ip", text, counts)
    text = _sub(_IPV6, "ip", text, counts)
    text = _phones(text, counts)
    return Redaction(text, counts)
