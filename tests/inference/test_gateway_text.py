"""What the gateway puts into ChatEvents always passes the contract's `Text`."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from inference.gateway.text import REPLACEMENT, clean_answer, first_refused_character
from schemas.base import MAX_TEXT_CHARS, Text

TEXT = TypeAdapter(Text)


def test_the_refused_characters_are_exactly_those_the_contract_refuses() -> None:
    for code_point in range(0x110000):
        character = chr(code_point)
        try:
            TEXT.validate_python(character)
            accepted = True
        except ValidationError:
            accepted = False
        assert accepted == (first_refused_character(character) is None), hex(code_point)


@pytest.mark.parametrize(
    ("generated", "recorded"),
    [
        ("rain virus\x11pr", f"rain virus{REPLACEMENT}pr"),
        ("two\nlines\tand a tab\r", "two\nlines\tand a tab\r"),
        ("", " "),
        ("\x00", REPLACEMENT),
        ("x" * (MAX_TEXT_CHARS + 5), "x" * MAX_TEXT_CHARS),
    ],
)
def test_a_generated_answer_is_cleaned_into_valid_text(generated: str, recorded: str) -> None:
    cleaned = clean_answer(generated)

    assert cleaned == recorded
    assert TEXT.validate_python(cleaned) == cleaned


def test_the_first_refused_character_is_named_with_its_position() -> None:
    assert first_refused_character("ok\x7fno") == (
        "control character U+007F at position 2; only newline, tab and carriage return "
        "are allowed")
