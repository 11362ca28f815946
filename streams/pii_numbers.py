"""Finding private numbers in a folded text: IBANs, payment cards, SSNs and phone numbers.

A pattern only proposes a candidate; a checksum or a numbering plan decides, with
well-kept libraries rather than rules of our own where one exists:

- IBAN: `stdnum.iban` (ISO 13616 mod-97 and each country's BBAN format and length);
- card: `stdnum.luhn`, and the issuer ranges (Visa, Mastercard, Amex, Discover, JCB,
  Diners, UnionPay, Maestro), on 13-19 digits grouped by spaces, dashes, dots, slashes or
  a line break;
- SSN: `stdnum.us.ssn` (no area 000/666/9xx, group 00, serial 0000, nor the numbers
  known to be invalid); written as `123-45-6789`, `123 45 6789` or `123.45.6789`, or as 9
  bare digits where the text says it is one ("SSN", "social security"): 9 bare digits
  without a cue are as likely an order number;
- phone: Google's libphonenumber (`phonenumbers`). A number with an international prefix
  (`+`, `00`) must be a possible number of its country; a bracketed area code, the North
  American 3-3-4 grouping and a national number with a trunk `0` are taken on their
  shape (9-15 digits); a bare run of 10 digits or `415 5552671` only when it is a valid
  North American number (so unix timestamps, which start with 1, are not phones).

Every function takes the folded text (`streams.pii_view`) and the windows of it that hold
digits (`number_windows`), and returns spans in the text: a chat turn of 400 words with
one phone number is read by these patterns only around that number.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import phonenumbers
from stdnum import iban as _iban
from stdnum import luhn as _luhn
from stdnum.us import ssn as _ssn

Span = tuple[int, int, str]
Window = tuple[int, int]

# Digits and what joins the digits of one number; a window ends at anything else.
_NUMBER_WINDOW = re.compile(r"[0-9](?:[0-9 \t\r\n./()+-]*[0-9])?\)?")


def number_windows(text: str) -> list[Window]:
    """Where numbers are in `text`: (start, end) of each run of digits and separators,
    with the characters the patterns look at around them (a `+` or `(` before, two
    characters after for their lookaheads)."""
    windows = []
    for match in _NUMBER_WINDOW.finditer(text):
        start = match.start()
        while start > 0 and match.start() - start < 2 and text[start - 1] in "+( \t":
            start -= 1
        windows.append((start, min(len(text), match.end() + 2)))
    return windows

_IBAN_START = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}[0-9]{2}")
_IBAN_MAX = 34
# Digit groups joined by one separator: spaces, a dash, dot or slash, or a line break.
_SEPARATOR = r"(?:[ \t]*(?:\r?\n|\r)[ \t]*|[ \t]?[./-][ \t]?|[ \t]{1,2})"
_CARD_RUN = re.compile(rf"(?<![\w.,])[0-9]++(?:{_SEPARATOR}[0-9]++)*+(?![0-9])")
_GROUP = re.compile(r"[0-9]+")
_SSN_SEPARATED = re.compile(r"(?<![\w.,/-])([0-9]{3})([ .-])([0-9]{2})\2([0-9]{4})"
                            r"(?![\w]|[.,/-][0-9])")
_SSN_BARE = re.compile(r"(?<![\w.,/-])[0-9]{9}(?![\w]|[.,/-][0-9])")
_SSN_CUE = re.compile(r"(?i:\b(?:ssn|ssns|ss\#|social[\s-]+security|soc\.?\s*sec|ssa|itin"
                      r"|tax(?:payer)?[\s-]*id)\b)")
_SSN_CUE_CHARS = 48
_PHONE_SEPARATOR = r"(?:[ \t]?[.-][ \t]?|[ \t]{1,2})"
_PHONE_TOKEN = r"(?:\([0-9]++\)|[0-9]++)"
_PHONE_RUN = re.compile(
    rf"(?<![\w+.,/-])(?:\+[ \t]?)?{_PHONE_TOKEN}(?:{_PHONE_SEPARATOR}?{_PHONE_TOKEN})*+"
    r"(?![\w]|[.,/-]?[0-9])")


def ibans(text: str, windows: list[Window]) -> Iterator[Span]:
    """IBANs (mod-97 and country format), written compact or in groups, any case."""
    # An IBAN's first digits follow its two-letter country code, just before a window.
    for match in _runs(_IBAN_START, text, [(max(0, a - 2), b) for a, b in windows]):
        start = match.start()
        compact: list[str] = []
        ends: list[int] = []
        position = start
        while position < len(text) and len(compact) < _IBAN_MAX:
            char = text[position]
            if char.isascii() and char.isalnum():
                compact.append(char.upper())
                ends.append(position + 1)
                position += 1
            elif char in " -" and position + 1 < len(text) and text[position + 1].isalnum():
                position += 1
            else:
                break
        # Only one length can fit the country's format: try the longest first.
        for length in range(len(compact), 14, -1):
            if _iban.is_valid("".join(compact[:length])):
                yield start, ends[length - 1], "iban"
                break


def _issuer_ok(digits: str) -> bool:
    """True when the number starts with a payment-card issuer's range for its length."""
    n = len(digits)
    two, four = int(digits[:2]), int(digits[:4])
    if digits[0] == "4":
        return n in (13, 16, 19)  # Visa
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return n == 16  # Mastercard
    if two in (34, 37):
        return n == 15  # American Express
    if digits[0] == "6":
        return 16 <= n <= 19 or (n >= 12 and two in (63, 67))  # Discover, UnionPay, Maestro
    if 3528 <= four <= 3589 or two in (36, 38, 39) or 300 <= int(digits[:3]) <= 305:
        return 14 <= n <= 19  # JCB, Diners
    if two in (50, 56, 57, 58):
        return 12 <= n <= 19  # Maestro
    return False


def _runs(pattern: re.Pattern[str], text: str, windows: list[Window]
          ) -> Iterator[re.Match[str]]:
    # Lookbehinds see the text before a window; lookaheads stop at its end, two characters
    # past the digits (which no pattern can consume: each continuation needs a digit).
    for start, end in windows:
        yield from pattern.finditer(text, start, end)


def cards(text: str, windows: list[Window]) -> Iterator[Span]:
    """Payment card numbers: 13-19 digits passing Luhn and an issuer range."""
    for run in _runs(_CARD_RUN, text, windows):
        groups = [(g.start(), g.end()) for g in _GROUP.finditer(run.group())]
        if sum(e - s for s, e in groups) < 13:
            continue
        base = run.start()
        i = 0
        while i < len(groups):
            found = None if _after_point(run.group(), groups, i) else _card_window(
                run.group(), groups, i)
            if found is None:
                i += 1
                continue
            yield base + groups[i][0], base + groups[found][1], "card"
            i = found + 1


def _after_point(run: str, groups: list[tuple[int, int]], first: int) -> bool:
    """True when group `first` follows a `.`: the decimals of a number (0.4375791111971886),
    not the start of a card or phone (a dotted one, 4111.1111..., starts at its first group)."""
    return first > 0 and "." in run[groups[first - 1][1]:groups[first][0]]


_CARD_GROUPINGS = frozenset({(4, 4, 4, 4), (4, 4, 4, 4, 3), (4, 6, 5), (4, 6, 4), (4, 4, 5),
                             (4, 4, 4, 1), (4, 4, 4, 2), (4, 4, 4, 3)})


def _card_window(run: str, groups: list[tuple[int, int]], first: int) -> int | None:
    """The last group of the longest card starting at group `first`, if any."""
    digits = ""
    best = None
    sizes: list[int] = []
    dotted = False
    for last in range(first, len(groups)):
        start, end = groups[last]
        size = end - start
        between = run[groups[last - 1][1]:start] if last > first else ""
        joined_by_line = "\n" in between
        dotted = dotted or "." in between
        sizes.append(size)
        # Cards are grouped by 4 (Amex 4-6-5): a group of 1 or 2 digits, unless a line
        # break cut it, is a date or a list, not part of a card.
        if size < 3 and last > first and not joined_by_line and last + 1 < len(groups):
            break
        digits += run[start:end]
        if len(digits) > 19:
            break
        # Dots also write decimals (389.0380478981916): dotted, only a card's own grouping.
        if (len(digits) >= 13 and (not dotted or tuple(sizes) in _CARD_GROUPINGS)
                and _issuer_ok(digits) and _luhn.is_valid(digits)):
            best = last
    return best


def ssns(text: str, windows: list[Window]) -> Iterator[Span]:
    """US social security numbers: grouped 3-2-4, or 9 bare digits after an SSN cue."""
    for match in _runs(_SSN_SEPARATED, text, windows):
        if _ssn.is_valid(match.group(1) + match.group(3) + match.group(4)):
            yield match.start(), match.end(), "ssn"
    for match in _runs(_SSN_BARE, text, windows):
        before = text[max(0, match.start() - _SSN_CUE_CHARS):match.start()]
        if _SSN_CUE.search(before) is not None and _ssn.is_valid(match.group()):
            yield match.start(), match.end(), "ssn"


def phones(text: str, windows: list[Window]) -> Iterator[Span]:
    """Phone numbers (see the module's docstring for which shapes count)."""
    for run in _runs(_PHONE_RUN, text, windows):
        raw = run.group()
        tokens = [(g.start(), g.end()) for g in _GROUP.finditer(raw)]
        if sum(e - s for s, e in tokens) < 7:
            continue
        i = 0
        while i < len(tokens):
            last = None if _after_point(raw, tokens, i) else _phone_window(raw, tokens, i)
            if last is None:
                i += 1
                continue
            start = 0 if i == 0 and raw.startswith(("+", "(")) else tokens[i][0]
            if raw[start] != "+" and start > 0 and raw[start - 1] == "(":
                start -= 1
            end = tokens[last][1] + (raw[tokens[last][1]:tokens[last][1] + 1] == ")")
            yield run.start() + start, run.start() + end, "phone"
            i = last + 1


def _phone_window(raw: str, tokens: list[tuple[int, int]], first: int) -> int | None:
    best = None
    for last in range(first, min(len(tokens), first + 7)):
        if _is_phone(raw, tokens, first, last):
            best = last
    return best


def _is_phone(raw: str, tokens: list[tuple[int, int]], first: int, last: int) -> bool:
    groups = [raw[s:e] for s, e in tokens[first:last + 1]]
    digits = "".join(groups)
    count = len(digits)
    if count < 7 or count > 15:
        return False
    sizes = [len(g) for g in groups]
    head = tokens[first][0]
    if first == 0 and raw.startswith("+") or digits.startswith("00") and sizes[0] <= 4:
        number = "+" + (digits[2:] if digits.startswith("00") and not raw.startswith("+")
                        else digits)
        return count >= 8 and _possible(number)
    if head > 0 and raw[head - 1] == "(" and 2 <= sizes[0] <= 4 and len(groups) > 1:
        return 9 <= count <= 15  # a bracketed area code
    if sizes in ([3, 3, 4], [1, 3, 3, 4]) and (sizes[0] == 3 or digits[0] == "1"):
        return True  # the North American grouping
    if digits[0] == "0" and 9 <= count <= 11:
        # A national number with its trunk prefix: 020 7946 0958, 06 12 34 56 78, 07...
        return len(groups) == 1 or (2 <= sizes[0] <= 5 and min(sizes) >= 2)
    if sizes in ([10], [3, 7], [11], [1, 3, 7], [3, 3, 4]):
        # 415.5552671 is as likely a decimal number: a dot joins only the 3-3-4 form.
        dotted = "." in raw[tokens[first][0]:tokens[last][1]]
        return not dotted and _valid_north_american(digits)
    return False


def _possible(number: str) -> bool:
    try:
        return bool(phonenumbers.is_possible_number(phonenumbers.parse(number, None)))
    except phonenumbers.NumberParseException:
        return False


def _valid_north_american(digits: str) -> bool:
    try:
        return bool(phonenumbers.is_valid_number(phonenumbers.parse(digits, "US")))
    except phonenumbers.NumberParseException:
        return False
