"""Exact and near-duplicate detection within a sliding window of recent turns.

Exact duplicates are found by a hash of the lowercased text; near duplicates by MinHash
over word 3-shingles with locality-sensitive hashing. The window is the last
`window_records` turns seen by one worker for one partition; the oldest fall out first,
so memory stays bounded.

A turn is a near duplicate when the MinHash estimate of its Jaccard similarity to a turn
of the window (the share of equal signature slots) is at least `threshold`. LSH bands of
8 slots only pick the candidates to compare, with a recall near 1 from a Jaccard of
about 0.8 up. (datasketch's `MinHashLSH` took any band match as the answer, with bands
tuned so that it found only about a third of the pairs at the threshold itself, and its
per-turn `MinHash` cost 0.4 ms of SHA-1 and permutation set-up; here the signatures of a
whole batch are a few numpy expressions over CRC-32 word hashes, computed by
`Fingerprinter` where the turn is cleaned, and the window only compares.)

A replay of the same event (same `event_id`, after a crash or rebalance) is not a
duplicate: the first sighting's decision is returned again, so a replayed record always
lands where it landed before.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections import OrderedDict
from itertools import chain
from uuid import UUID

import numpy as np
import numpy.typing as npt

from schemas.platform import ReasonCode
from streams.tokens import run_bounds

_WORD = re.compile(r"\w+")
#: Slots per LSH band: two turns become candidates when all 8 slots of a band agree.
BAND_ROWS = 8
_SEED = 20261126
_WORD_CACHE_MAX = 200_000
_U64 = np.uint64
# Odd multipliers that mix three 32-bit word hashes into one 64-bit shingle hash.
_MIX = (_U64(0x9E3779B97F4A7C15), _U64(0xC2B2AE3D27D4EB4F), _U64(1))


#: Shingle hashes hashed per pass: 16k x 8 bytes, twice, stays in L2 cache.
_CHUNK_SHINGLES = 16_384
_MASK64 = (1 << 64) - 1


class _Permutations:
    """Multiply-add-shift hash functions; slot i of a signature is the min of function i."""

    def __init__(self, count: int) -> None:
        rng = np.random.default_rng(_SEED)
        self.a = rng.integers(1, 2**63, size=count, dtype=np.uint64) | _U64(1)
        self.b = rng.integers(0, 2**63, size=count, dtype=np.uint64)

    def signatures(self, shingles: list[npt.NDArray[np.uint64]]) -> npt.NDArray[np.uint32]:
        """One signature row per non-empty shingle array, in order."""
        out = np.empty((len(self.a), len(shingles)), dtype=np.uint64)
        start = 0
        while start < len(shingles):
            stop, size = start + 1, len(shingles[start])
            while stop < len(shingles) and size + len(shingles[stop]) <= _CHUNK_SHINGLES:
                size += len(shingles[stop])
                stop += 1
            self._minima(shingles[start:stop], out[:, start:stop])
            start = stop
        # The top 32 bits of the minimum are the minimum of the top 32 bits.
        out >>= _U64(32)
        return out.T.astype(np.uint32, order="C")

    def _minima(self, chunk: list[npt.NDArray[np.uint64]], out: npt.NDArray[np.uint64]
                ) -> None:
        # One hash function at a time over all the chunk's shingles: a flat multiply-add
        # and a 1-d reduceat per function cost a third of one (shingles x functions)
        # outer product reduced along its first axis.
        offsets = np.zeros(len(chunk), dtype=np.intp)
        np.cumsum([len(c) for c in chunk[:-1]], out=offsets[1:])
        values = np.concatenate(chunk)
        hashed = np.empty_like(values)
        for row, (a, b) in enumerate(zip(self.a, self.b, strict=True)):
            # Unsigned array arithmetic wraps silently (numpy warns for scalars only).
            np.multiply(values, a, out=hashed)
            hashed += b
            np.minimum.reduceat(hashed, offsets, out=out[row])


class _WordHashes:
    """CRC-32 of words, cached: chat turns reuse a small vocabulary."""

    def __init__(self) -> None:
        self._cache: dict[str, int] = {}

    def __call__(self, words: list[str]) -> npt.NDArray[np.uint64]:
        cache = self._cache
        hashes = list(map(cache.get, words))
        if None in hashes:
            if len(cache) > _WORD_CACHE_MAX:
                cache.clear()
            for index, value in enumerate(hashes):
                if value is None:
                    word = words[index]
                    hashes[index] = cache[word] = word_hash(word)
        return np.fromiter(hashes, dtype=np.uint64, count=len(hashes))


def _shingle_hashes(words: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """Hashes of the word 3-shingles (of the whole text when it has fewer than 3 words)."""
    if len(words) < 3:
        combined = 0  # numpy's uint64 arithmetic, in Python ints masked to 64 bits
        for index, word in enumerate(words.tolist()):
            combined = (combined * int(_MIX[0]) + word + index + 1) & _MASK64
        return np.array([combined], dtype=np.uint64)
    return words[:-2] * _MIX[0] + words[1:-1] * _MIX[1] + words[2:] * _MIX[2]


def exact_digest(text: str) -> bytes:
    """The key of exact duplicates: a hash of the lowercased text."""
    return hashlib.blake2b(text.lower().encode(), digest_size=16).digest()


class Fingerprinter:
    """Exact digests and MinHash signatures of a batch of turns, for `DuplicateWindow`.

    Stateless but for a cache of word hashes, so it can run wherever the turns are
    cleaned (a pool process included) and the window only compares.
    """

    def __init__(self, *, min_chars: int, permutations: int) -> None:
        self._min_chars = min_chars
        self._permutations = _Permutations(permutations)
        self._words = _WordHashes()

    def fingerprints(self, texts: list[str], words: list[list[str]] | None = None
                     ) -> list[tuple[bytes, npt.NDArray[np.uint32] | None]]:
        """(exact digest, signature) of each text; no signature under `min_chars`.

        Args:
            words: the `\\w+` runs of each lowercased text, when the caller has them.
        """
        long = [i for i, text in enumerate(texts) if len(text) >= self._min_chars]
        runs = [_WORD.findall(texts[i].lower()) if words is None else words[i] for i in long]
        hashes = self._words(list(chain.from_iterable(runs)))
        lengths = [len(run) for run in runs]
        return self._fingerprints(texts, long, hashes, run_bounds(lengths)[:-1].tolist(),
                                  lengths)

    def fingerprints_of_hashes(self, texts: list[str], hashes: npt.NDArray[np.uint64],
                               bounds: list[int]) -> list[tuple[bytes,
                                                                npt.NDArray[np.uint32] | None]]:
        """`fingerprints` of texts whose word hashes (`word_hash`) the caller has.

        Args:
            hashes: the hashes of every text's words, one text after the other.
            bounds: where each text's words start in `hashes`, and the end.
        """
        long = [i for i, text in enumerate(texts) if len(text) >= self._min_chars]
        return self._fingerprints(texts, long, hashes, [bounds[i] for i in long],
                                  [bounds[i + 1] - bounds[i] for i in long])

    def _fingerprints(self, texts: list[str], long: list[int], hashes: npt.NDArray[np.uint64],
                      starts: list[int], lengths: list[int]
                      ) -> list[tuple[bytes, npt.NDArray[np.uint32] | None]]:
        digests = [exact_digest(text) for text in texts]
        signatures: list[npt.NDArray[np.uint32] | None] = [None] * len(texts)
        if long:
            shingles = self._shingles(hashes, starts, lengths)
            for i, row in zip(long, self._permutations.signatures(shingles), strict=True):
                signatures[i] = row
        return list(zip(digests, signatures, strict=True))

    @staticmethod
    def _shingles(hashes: npt.NDArray[np.uint64], starts: list[int], lengths: list[int]
                  ) -> list[npt.NDArray[np.uint64]]:
        # One shingle expression over all the words; each text's shingles are then a
        # slice (the ones straddling two texts are never used).
        shingles = _shingle_hashes(hashes) if len(hashes) >= 3 else hashes
        return [shingles[start:start + length - 2] if length >= 3
                else _shingle_hashes(hashes[start:start + length])
                for start, length in zip(starts, lengths, strict=True)]


def word_hash(word: str) -> int:
    """The hash of a word that shingles are made of (CRC-32 of its UTF-8)."""
    return zlib.crc32(word.encode())


class DuplicateWindow:
    """Remembers recent turns and says whether a new one repeats one of them."""

    def __init__(
        self, *, window_records: int, threshold: float, min_chars: int, permutations: int
    ) -> None:
        self._window_records = window_records
        self._threshold = threshold
        self._bands = max(1, permutations // BAND_ROWS)
        self._fingerprinter = Fingerprinter(min_chars=min_chars, permutations=permutations)
        self._tables: list[dict[bytes, set[UUID]]] = [{} for _ in range(self._bands)]
        self._signatures: dict[UUID, npt.NDArray[np.uint32]] = {}
        self._exact: dict[bytes, UUID] = {}
        # event id -> (exact digest, band keys or None, decision) in arrival order.
        self._seen: OrderedDict[UUID, tuple[bytes, list[bytes] | None, ReasonCode | None]] = (
            OrderedDict())

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, event_id: UUID, text: str, *, words: list[str] | None = None
              ) -> ReasonCode | None:
        """`duplicate`, `near_duplicate`, or None for a new turn (which is remembered).

        Args:
            words: the `\\w+` runs of the lowercased text, when the caller has them.
        """
        if event_id in self._seen:
            return self._seen[event_id][2]
        (digest, signature), = self._fingerprinter.fingerprints(
            [text], None if words is None else [words])
        return self.check_fingerprint(event_id, digest, signature)

    def check_fingerprint(self, event_id: UUID, digest: bytes,
                          signature: npt.NDArray[np.uint32] | None) -> ReasonCode | None:
        """`check` for a turn whose fingerprint (`Fingerprinter`) is already computed.

        Args:
            signature: None for a text shorter than `min_chars` (exact duplicates only).
        """
        previous = self._seen.get(event_id)
        if previous is not None:
            return previous[2]
        decision: ReasonCode | None = None
        band_keys = None
        if digest in self._exact:  # no band keys needed: a duplicate is not indexed
            decision = ReasonCode.DUPLICATE
        elif signature is not None:
            band_keys = self._band_keys(signature)
            if self._near(signature, band_keys):
                decision = ReasonCode.NEAR_DUPLICATE
        self._remember(event_id, digest, signature, decision, band_keys)
        return decision

    def remember(self, event_id: UUID, digest: bytes,
                 signature: npt.NDArray[np.uint32] | None, decision: ReasonCode | None) -> None:
        """Take in a turn whose decision was made before (a replay after a restart).

        The window then holds what it would have held had it decided the turn itself: a
        turn that was kept is matched against from now on, a duplicate is not.
        """
        if event_id not in self._seen:
            self._remember(event_id, digest, signature, decision)

    def _band_keys(self, signature: npt.NDArray[np.uint32]) -> list[bytes]:
        return [signature[i * BAND_ROWS:(i + 1) * BAND_ROWS].tobytes()
                for i in range(self._bands)]

    def _remember(self, event_id: UUID, digest: bytes,
                  signature: npt.NDArray[np.uint32] | None, decision: ReasonCode | None,
                  band_keys: list[bytes] | None = None) -> None:
        """Record a decided turn; a kept one is indexed (band keys computed if not given)."""
        keys = None
        if decision is None:
            self._exact[digest] = event_id
            if signature is not None:
                keys = band_keys if band_keys is not None else self._band_keys(signature)
                self._signatures[event_id] = signature
                for table, key in zip(self._tables, keys, strict=True):
                    table.setdefault(key, set()).add(event_id)
        self._seen[event_id] = (digest, keys, decision)
        while len(self._seen) > self._window_records:
            self._evict()

    def _near(self, signature: npt.NDArray[np.uint32], band_keys: list[bytes]) -> bool:
        candidates: set[UUID] = set()
        for table, key in zip(self._tables, band_keys, strict=True):
            found = table.get(key)
            if found:
                candidates |= found
        needed = self._threshold * len(signature)
        return any(np.count_nonzero(self._signatures[c] == signature) >= needed
                   for c in candidates)

    def _evict(self) -> None:
        old_id, (digest, keys, decision) = self._seen.popitem(last=False)
        if decision is None and self._exact.get(digest) == old_id:
            del self._exact[digest]
        if keys is not None:
            del self._signatures[old_id]
            for table, key in zip(self._tables, keys, strict=True):
                members = table[key]
                members.discard(old_id)
                if not members:
                    del table[key]
