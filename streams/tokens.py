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
_ASCII_WORD_BYTE = np.array([chr(c).isalnum() or c == ord("_") if c < 128 else False
                             for c in range(256)], dtype=np.int8)
_KEY_BYTES = 8
_PIECE_CHARS = 1 << 20
_KEY_SHIFTS = np.arange(_KEY_BYTES)


def run_bounds(lengths: Any) -> npt.NDArray[np.intp]:
    """Where each of consecutive runs of these lengths starts, then where the last ends.

    `values[bounds[i]:bounds[i + 1]]` is run `i` of values laid one run after the other.
    """
    bounds = np.zeros(len(lengths) + 1, dtype=np.intp)
    np.cumsum(lengths, out=bounds[1:])
    return bounds


def select_runs(values: npt.NDArray[Any], bounds: npt.NDArray[np.intp], which: list[int]
                ) -> tuple[npt.NDArray[Any], npt.NDArray[np.intp]]:
    """Runs `which` of `values` (cut at `bounds`), one after the other, and their bounds."""
    runs = [values[bounds[i]:bounds[i + 1]] for i in which]
    return (np.concatenate(runs) if runs else values[:0]), run_bounds([len(r) for r in runs])


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
        self._forgotten = 0  # how many times every word was forgotten
        # Words of at most 8 bytes as their bytes in a big-endian integer (word bytes are
        # never 0, so the key is exact), sorted, with their ids.
        self._keys = np.empty(0, dtype=np.uint64)
        self._key_ids = np.empty(0, dtype=np.intp)

    def words_of(self, ids: npt.NDArray[np.intp]) -> list[str]:
        """The words of `ids` (from the latest `ids` or `ids_of_texts` answer)."""
        return [self._words[i] for i in ids.tolist()]

    def ids_of_texts(self, lowered: list[str]
                     ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        """`ids` of the `words` of each lowercased text, and where each text's ids start.

        Returns:
            The ids one text after the other, and the bounds (texts + 1 offsets).
        """
        forgotten = self._forgotten
        ascii_texts = [i for i, text in enumerate(lowered) if text.isascii()]
        if len(ascii_texts) == len(lowered):
            found = self._ids_of_ascii(lowered)
            if self._forgotten == forgotten:
                return found
        elif ascii_texts:
            # The ASCII texts in one piece, the others (regex runs) one by one, in order.
            ascii_ids, ascii_bounds = self._ids_of_ascii([lowered[i] for i in ascii_texts])
            ascii_parts = iter([ascii_ids[ascii_bounds[k]:ascii_bounds[k + 1]]
                                for k in range(len(ascii_texts))])
            parts = [next(ascii_parts) if text.isascii() else self.ids(words(text))
                     for text in lowered]
            if self._forgotten == forgotten:
                return (np.concatenate(parts).astype(np.intp, copy=False),
                        run_bounds([len(part) for part in parts]))
        # No ASCII text, or words forgotten half-way: every text's runs, one by one.
        runs = [words(text) for text in lowered]
        return (self.ids([word for run in runs for word in run]),
                run_bounds([len(run) for run in runs]))

    def _ids_of_ascii(self, lowered: list[str]
                      ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        # A few 8-byte arrays per word: a batch is taken in pieces of about a megabyte of
        # text, so that a batch of one-letter words stays within tens of megabytes.
        pieces: list[tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]] = []
        start = size = 0
        for stop, text in enumerate(lowered):
            if size and size + len(text) > _PIECE_CHARS:
                pieces.append(self._ids_of_ascii_piece(lowered[start:stop]))
                start, size = stop, 0
            size += len(text) + 1
        pieces.append(self._ids_of_ascii_piece(lowered[start:]))
        if len(pieces) == 1:
            return pieces[0]
        starts = run_bounds([len(ids) for ids, _ in pieces])
        bounds = np.concatenate([piece_bounds[:-1] + start for (_, piece_bounds), start
                                 in zip(pieces, starts.tolist(), strict=False)]
                                + [starts[-1:]]).astype(np.intp)
        return np.concatenate([ids for ids, _ in pieces]), bounds

    def _ids_of_ascii_piece(self, lowered: list[str]
                            ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        # The `\w+` runs of ASCII text are runs of [0-9a-z_] once lowercased: found with
        # numpy over the batch's bytes, without a Python string per word. The texts are
        # joined by a space, which no run crosses.
        joined = " ".join(lowered).encode("ascii")
        data = np.frombuffer(joined + bytes(_KEY_BYTES), dtype=np.uint8)
        in_word = np.zeros(len(joined) + 2, dtype=np.int8)
        in_word[1:-1] = _ASCII_WORD_BYTE[data[:len(joined)]]
        edges = np.diff(in_word)
        starts = np.flatnonzero(edges == 1)
        lengths = np.flatnonzero(edges == -1) - starts
        text_starts = run_bounds([len(text) + 1 for text in lowered])
        bounds = np.searchsorted(starts, text_starts).astype(np.intp)
        found = np.empty(len(starts), dtype=np.intp)
        short = np.flatnonzero(lengths <= _KEY_BYTES)
        if len(short):
            # Each word's first 8 bytes, through a zero-copy window view (an index array
            # of 8 positions per word would take 64 bytes a word).
            windows = np.lib.stride_tricks.sliding_window_view(data, _KEY_BYTES)
            gathered = windows[starts[short]]
            gathered[_KEY_SHIFTS >= lengths[short, None]] = 0
            found[short] = self._ids_of_keys(gathered.view(">u8").ravel().astype(np.uint64))
        long = np.flatnonzero(lengths > _KEY_BYTES).tolist()
        if long:
            found[long] = self.ids([joined[start:start + length].decode("ascii") for start, length
                                    in zip(starts[long].tolist(), lengths[long].tolist(),
                                           strict=True)])
        return found, bounds

    def _ids_of_keys(self, keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.intp]:
        known = self._keys
        at = np.searchsorted(known, keys)
        at[at == len(known)] = 0
        hit = known[at] == keys if len(known) else np.zeros(len(keys), dtype=bool)
        found = np.where(hit, self._key_ids[at] if len(known) else -1, -1)
        if hit.all():
            return found
        new_keys = np.unique(keys[~hit])
        new_ids = self.ids([key.to_bytes(_KEY_BYTES, "big").rstrip(b"\0").decode("ascii")
                            for key in new_keys.tolist()])
        keys_now = np.concatenate([self._keys, new_keys])
        order = np.argsort(keys_now, kind="stable")
        self._keys = keys_now[order]
        self._key_ids = np.concatenate([self._key_ids, new_ids])[order]
        missing = np.flatnonzero(~hit)
        found[missing] = new_ids[np.searchsorted(new_keys, keys[missing])]
        return found

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
            self._keys = np.empty(0, dtype=np.uint64)
            self._key_ids = np.empty(0, dtype=np.intp)
            self._forgotten += 1
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
