"""Exact and near-duplicate detection within a sliding window of recent turns.

Exact duplicates are found by a hash of the normalized text; near duplicates by MinHash
with locality-sensitive hashing (datasketch) over word 3-shingles. The window is the
last `window_records` turns seen by one worker for one partition; the oldest fall out
first, so memory stays bounded.

A replay of the same event (same `event_id`, after a crash or rebalance) is not a
duplicate: the first sighting's decision is returned again, so a replayed record always
lands where it landed before.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from uuid import UUID

from datasketch import MinHash, MinHashLSH

from schemas.platform import ReasonCode

_WORD = re.compile(r"\w+")


def _shingles(text: str) -> set[bytes]:
    words = _WORD.findall(text.lower())
    if len(words) < 3:
        return {" ".join(words).encode()}
    return {" ".join(words[i:i + 3]).encode() for i in range(len(words) - 2)}


class DuplicateWindow:
    """Remembers recent turns and says whether a new one repeats one of them."""

    def __init__(
        self, *, window_records: int, threshold: float, min_chars: int, permutations: int
    ) -> None:
        self._window_records = window_records
        self._min_chars = min_chars
        self._permutations = permutations
        self._lsh = MinHashLSH(threshold=threshold, num_perm=permutations)
        self._exact: dict[bytes, UUID] = {}
        # event id -> (exact digest, in LSH?, decision) in arrival order, for eviction.
        self._seen: OrderedDict[UUID, tuple[bytes, bool, ReasonCode | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, event_id: UUID, text: str) -> ReasonCode | None:
        """`duplicate`, `near_duplicate`, or None for a new turn (which is remembered)."""
        previous = self._seen.get(event_id)
        if previous is not None:
            return previous[2]
        digest = hashlib.blake2b(text.lower().encode(), digest_size=16).digest()
        decision: ReasonCode | None = None
        in_lsh = False
        if digest in self._exact:
            decision = ReasonCode.DUPLICATE
        elif len(text) >= self._min_chars:
            minhash = MinHash(num_perm=self._permutations)
            minhash.update_batch(list(_shingles(text)))
            if self._lsh.query(minhash):
                decision = ReasonCode.NEAR_DUPLICATE
            else:
                self._lsh.insert(event_id.bytes, minhash)
                in_lsh = True
        if decision is None:
            self._exact[digest] = event_id
        self._seen[event_id] = (digest, in_lsh, decision)
        while len(self._seen) > self._window_records:
            self._evict()
        return decision

    def _evict(self) -> None:
        old_id, (digest, in_lsh, decision) = self._seen.popitem(last=False)
        if decision is None and self._exact.get(digest) == old_id:
            del self._exact[digest]
        if in_lsh:
            self._lsh.remove(old_id.bytes)
