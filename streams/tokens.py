"""Word tokens of a turn, computed once and shared by duplicates, toxicity and safety.

`WordIds` numbers the words a process has seen, so that a batch's words are looked up
in one dict once, and what each stage needs of a word (its toxicity column, its hash
for duplicates, whether it names a protected group) is a numpy lookup by id, computed
once per distinct word.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt

_WORD = re.compile(r"\w+")
# For ASCII text `\w` is [A-Za-z0-9_]: every other character becomes a space, and
# str.split finds the same runs as the regex at about a third of its cost.
_ASCII_NON_WORD = str.maketrans(
    {c: " " for c in map(chr, range(128)) if not (c.isalnum() or c == "_")})
_WORD_IDS_MAX = 200_000


def words(lowered: str) -> list[str]:
    """The `\\w+` runs of an already lowercased text, in order."""
    if lowered.isascii():
        return lowered.translate(_ASCII_NON_WORD).split()
    return _WORD.findall(lowered)


class WordIds:
    """Dense ids of the words seen so far, and per-word facts as arrays indexed by id.

    Forgets every word past `max_words` (chat reuses a small vocabulary, but not
    forever), so memory stays bounded; ids are only valid within one `ids` answer and
    the `fact` arrays taken after it.
    """

    def __init__(self, *, max_words: int = _WORD_IDS_MAX) -> None:
        self._max_words = max_words
        self._ids: dict[str, int] = {}
        self._words: list[str] = []
        self._facts: dict[str, npt.NDArray[Any]] = {}

    def ids(self, words: list[str]) -> npt.NDArray[np.intp]:
        """The id of each word, in order; unseen words get the next ids."""
        known = self._ids
        found = np.fromiter(map(known.get, words, repeat(-1)), dtype=np.intp,
                            count=len(words))
        missing = np.flatnonzero(found < 0)
        if len(missing) == 0:
            return found
        if len(known) + len(missing) > self._max_words:
            known.clear()
            self._words.clear()
            self._facts.clear()
            missing = np.arange(len(words))
        for index in missing.tolist():
            word = words[index]
            number = known.get(word)
            if number is None:
                number = known[word] = len(self._words)
                self._words.append(word)
            found[index] = number
        return found

    def fact(self, name: str, of_word: Callable[[str], Any], dtype: Any) -> npt.NDArray[Any]:
        """`of_word(word)` of every word by id (`name` keys it; computed once per word)."""
        values = self._facts.get(name)
        have = 0 if values is None else len(values)
        if values is None or have < len(self._words):
            new = np.fromiter(map(of_word, self._words[have:]), dtype=dtype,
                              count=len(self._words) - have)
            values = new if values is None else np.concatenate([values, new])
            self._facts[name] = values
        assert values is not None
        return values
