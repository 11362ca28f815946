"""Where a statement ends and its data begins, as ClickHouse's HTTP handler sees it.

The HTTP interface concatenates the `query` parameter, a newline and the body, and
parses one statement off the front: an `INSERT ... FORMAT <name>` stops after the
format name, and `INSERT ... VALUES` after the keyword (the rest is data, read by
the named input format, or `Values`). Data never reaches the SQL parser: chDB runs
every statement of a text, so `VALUES (1); SELECT ... INTO OUTFILE` would otherwise
run a second statement hidden in the data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+([A-Za-z][A-Za-z0-9_]*)\s*;?\s*$", re.IGNORECASE)
_LEADING_NOISE = re.compile(rb"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
_HEAD_SCAN_BYTES = 1 << 20
_READ_ONLY_KINDS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN"})


@dataclass(frozen=True)
class Statement:
    """One statement, and for `INSERT ... FORMAT x` the data that follows it."""

    sql: bytes
    kind: str
    insert_format: str | None = None
    data: bytes = b""

    @property
    def is_insert_with_data(self) -> bool:
        return self.insert_format is not None

    @property
    def is_read_only(self) -> bool:
        return self.kind in _READ_ONLY_KINDS

    def output_format(self, default: str) -> str:
        """The format of the result: a trailing FORMAT clause wins over `default_format`."""
        match = _TRAILING_FORMAT.search(self.sql[-256:].decode("utf-8", "replace"))
        return match.group(1) if match else default


def split(text: bytes) -> Statement:
    """Split the request text into the statement and, for `INSERT ... FORMAT`, its data."""
    start = _LEADING_NOISE.match(text).end()  # type: ignore[union-attr]
    first = start
    while first < len(text) and text[first] in b"( \t\r\n":  # (SELECT ...) is a SELECT
        first += 1
    word = _WORD.match(text, first)
    kind = word.group(0).decode().upper() if word else ""
    if kind != "INSERT":
        return Statement(sql=text, kind=kind)
    position = _find_format_keyword(text, start)
    if position is None:
        return Statement(sql=text, kind=kind)
    keyword_at, name_end, name = position
    if name == "Values" and text[keyword_at:name_end].upper() == b"VALUES":
        return Statement(sql=text[:keyword_at].rstrip(), kind=kind, insert_format=name,
                         data=text[name_end:])
    data_at = name_end
    # ClickHouse skips blanks and one line break between the format name and the data.
    while data_at < len(text) and text[data_at] in b" \t":
        data_at += 1
    if text.startswith(b"\r\n", data_at):
        data_at += 2
    elif data_at < len(text) and text[data_at] == 0x0A:
        data_at += 1
    return Statement(sql=text[:keyword_at].rstrip(), kind=kind, insert_format=name,
                     data=text[data_at:])


def _find_format_keyword(text: bytes, start: int) -> tuple[int, int, str] | None:
    """(offset of FORMAT, end of the format name, the name), skipping quoted text and
    or of VALUES (the data is in the Values format), skipping quoted text and
    parenthesised column lists, and stopping at SELECT or WITH: INSERT ... SELECT
    has no data."""
    i, end = start, min(len(text), start + _HEAD_SCAN_BYTES)
    depth = 0
    while i < end:
        c = text[i]
        if c in b"'\"`":
            i = _skip_quoted(text, i, end)
            continue
        if c == 0x28:  # (
            depth += 1
            i += 1
            continue
        if c == 0x29:  # )
            depth -= 1
            i += 1
            continue
        if c == 0x2F and text.startswith(b"/*", i):
            close = text.find(b"*/", i + 2)
            i = end if close < 0 else close + 2
            continue
        if c == 0x2D and text.startswith(b"--", i):  # comment to end of line
            newline = text.find(b"\n", i)
            i = end if newline < 0 else newline + 1
            continue
        word = _WORD.match(text, i)
        if word is None:
            i += 1
            continue
        upper = word.group(0).upper()
        if depth > 0:
            i = word.end()
            continue
        if upper in (b"SELECT", b"WITH"):
            return None
        if upper == b"VALUES":
            return i, word.end(), "Values"
        if upper == b"FORMAT":
            name = _WORD.match(text, _skip_blanks(text, word.end()))
            if name is None:
                return None
            return i, name.end(), name.group(0).decode()
        i = word.end()
    return None


def _skip_quoted(text: bytes, i: int, end: int) -> int:
    quote = text[i]
    i += 1
    while i < end:
        if text[i] == 0x5C:  # backslash escape
            i += 2
            continue
        if text[i] == quote:
            return i + 1
        i += 1
    return end


def _skip_blanks(text: bytes, i: int) -> int:
    while i < len(text) and text[i] in b" \t\r\n":
        i += 1
    return i
