"""Text the gateway puts into ChatEvents, made to pass the contract's `Text` type.

The contract refuses control characters (schemas/base.py). A user can be told so (400),
but a model can generate them: a small or freshly trained model emits byte tokens such as
U+0011. Such an answer must still reach the user and the warehouse, so the gateway
replaces each refused character with U+FFFD (visible, unlike deleting it) and cuts the
answer to the contract's length.
"""

from __future__ import annotations

import re

from schemas.base import MAX_TEXT_CHARS

#: Unicode categories Cc (C0, DEL, C1) and Cs (lone surrogates) but newline, tab and
#: carriage return: what the contract's `Text` refuses (a test checks they agree).
REFUSED_CHARACTERS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def first_refused_character(text: str) -> str | None:
    """A sentence naming the first character the contract refuses, or None."""
    found = REFUSED_CHARACTERS.search(text)
    if found is None:
        return None
    return (f"control character U+{ord(found.group()):04X} at position {found.start()}; "
            "only newline, tab and carriage return are allowed")


def clean_answer(text: str) -> str:
    """The model's answer as a valid `Text`: refused characters replaced, cut, never empty."""
    cleaned = REFUSED_CHARACTERS.sub(REPLACEMENT, text)[:MAX_TEXT_CHARS]
    # An empty answer (the model stopped at once) is still an answer to record.
    return cleaned or " "
