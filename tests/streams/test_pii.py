"""Redaction recall on labeled private data, and no redaction of ordinary numbers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from streams.pii import luhn_ok, redact

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _rows(name: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]


def test_redaction_recall_is_at_least_95_percent_on_200_labeled_strings() -> None:
    rows = _rows("pii_positive.jsonl")
    assert len(rows) >= 200
    found = total = 0
    for row in rows:
        out = redact(str(row["text"])).text
        for value in row["pii"]:  # type: ignore[attr-defined]
            total += 1
            digits = re.sub(r"\D", "", value)
            leaked = value in out or (len(digits) >= 9 and digits in re.sub(r"\D", "", out))
            found += not leaked
    assert found / total >= 0.95


def test_ordinary_numbers_like_years_and_prices_are_never_redacted() -> None:
    rows = _rows("pii_clean.jsonl")
    assert len(rows) >= 200
    changed = [r["text"] for r in rows if redact(str(r["text"])).text != r["text"]]
    assert changed == []


@pytest.mark.parametrize("text,kind", [
    ("write to a.b@example.org today", "email"),
    ("card 4111-1111-1111-1111 please", "card"),
    ("call +1 415-555-0134 now", "phone"),
    ("host 10.0.12.7 is down", "ip"),
    ("key sk-abcdefghijklmnopqrstuvwx123456", "secret"),
])
def test_redaction_counts_each_kind_it_replaces(text: str, kind: str) -> None:
    assert redact(text).counts[kind] == 1


def test_a_card_number_failing_the_luhn_check_is_left_alone() -> None:
    assert not luhn_ok("4111111111111112")
    assert redact("ref 4111 1111 1111 1112").text == "ref 4111 1111 1111 1112"
