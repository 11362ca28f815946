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
per-turn `MinHash` cost 0.4 ms of SHA-1 and permutation set-up; here a signature is one
numpy expression over CRC-32 word hashes.)

A replay of the same event (same `event_id`, after a crash or rebalance) is not a
duplicate: the first sighting's decision is returned again, so a replayed record always
lands where it landed before.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections import OrderedDict
from uuid import UUID

import numpy as np
import numpy.typing as npt

from schemas.platform import ReasonCode

_WORD = re.compile(r"\w+")
#: Slots per LSH band: two turns become candidates when all 8 slots of a band agree.
BAND_ROWS = 8
_SEED = 20261126
_WORD_CACHE_MAX = 200_000
_U64 = np.uint64
# Odd multipliers that mix three 32-bit word hashes into one 64-bit shingle hash.
_MIX = (_U64(0x9E3779B97F4A7C15), _U64(0xC2B2AE3D27D4EB4F), _U64(1))


class _Permutations:
    """Multiply-add-shift hash functions; slot i of a signature is the min of function i."""

    def __init__(self, count: int) -> None:
        rng = np.random.default_rng(_SEED)
        self.a = rng.integers(1, 2**63, size=count, dtype=np.uint64) | _U64(1)
        self.b = rng.integers(0, 2**63, size=count, dtype=np.uint64)

    def signature(self, shingles: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint32]:
        with np.errstate(over="ignore"):
            hashed = np.multiply.outer(shingles, self.a)
            hashed += self.b
        hashed >>= _U64(32)
        return hashed.min(axis=0).astype(np.uint32)  # type: ignore[no-any-return]


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
                    hashes[index] = cache[word] = zlib.crc32(word.encode())
        return np.array(hashes, dtype=np.uint64)


def _shingle_hashes(words: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """Hashes of the word 3-shingles (of the whole text when it has fewer than 3 words)."""
    with np.errstate(over="ignore"):
        if len(words) < 3:
            combined = _U64(0)
            for index, word in enumerate(words):
                combined = combined * _MIX[0] + word + _U64(index + 1)
            return np.array([combined], dtype=np.uint64)
        return words[:-2] * _MIX[0] + words[1:-1] * _MIX[1] + words[2:] * _MIX[2]


class DuplicateWindow:
    """Remembers recent turns and says whether a new one repeats one of them."""

    def __init__(
        self, *, window_records: int, threshold: float, min_chars: int, permutations: int
    ) -> None:
        self._window_records = window_records
        self._threshold = threshold
        self._min_chars = min_chars
        self._bands = max(1, permutations // BAND_ROWS)
        self._permutations = _Permutations(permutations)
        self._words = _WordHashes()
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
        previous = self._seen.get(event_id)
        if previous is not None:
            return previous[2]
        lowered = text.lower()
        digest = hashlib.blake2b(lowered.encode(), digest_size=16).digest()
        decision: ReasonCode | None = None
        keys: list[bytes] | None = None
        if digest in self._exact:
            decision = ReasonCode.DUPLICATE
        elif len(text) >= self._min_chars:
            signature = self._permutations.signature(
                _shingle_hashes(self._words(_WORD.findall(lowered) if words is None else words)))
            band_keys = [signature[i * BAND_ROWS:(i + 1) * BAND_ROWS].tobytes()
                         for i in range(self._bands)]
            if self._near(signature, band_keys):
                decision = ReasonCode.NEAR_DUPLICATE
            else:
                keys = band_keys
                self._signatures[event_id] = signature
                for table, key in zip(self._tables, band_keys, strict=True):
                    table.setdefault(key, set()).add(event_id)
        if decision is None:
            self._exact[digest] = event_id
        self._seen[event_id] = (digest, keys, decision)
        while len(self._seen) > self._window_records:
            self._evict()
        return decision

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
