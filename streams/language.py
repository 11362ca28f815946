"""Language identification with langid.py's shipped model, evaluated a batch at a time.

langid.py (`langid.classify`) walks an Aho-Corasick automaton over the text's bytes and
multiplies a dense vector of all 7,480 byte n-gram features by the 7,480 x 97 naive Bayes
matrix: about 2.4 ms a call. Two facts make it cheap:

- A state's output is every feature that is a suffix of the state's string, so the
  features each state emits fold, at load time, into one row of log-probabilities per
  state; a text's score is the sum of the rows of the states it passes through.
- Features are at most 4 bytes long, so the state after a byte is the trie node of the
  longest of the 1- to 4-byte strings ending there that is a trie node. The trie is
  closed under prefixes, so the n-byte string ending at a byte is a node exactly when
  the (n-1)-byte string ending at the byte before is one and has a child for this byte:
  four table lookups, each for every byte of a batch at once with numpy (no Python loop
  over bytes). The rows are summed by one sparse product.

The answer is langid's, to rounding (held by `tests/streams/test_fast_paths.py`), at
about 1/100th of the cost per text. py3langid does the same walk but needs numpy 2,
which this project cannot take.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Model:
    #: (automaton states, languages): the summed log-probabilities of the features a state
    #: emits, so a text's score is the sum of the rows of the states it passes through.
    state_log_prob: npt.NDArray[np.float64]
    log_prior: npt.NDArray[np.float64]  # (languages,)
    languages: tuple[str, ...]
    #: child[state * 256 + byte]: the trie node one byte longer, or `dead` when there is
    #: none; the dead row leads to `dead` again.
    child: npt.NDArray[np.intp]
    dead: int


def _node_strings(next_move: Sequence[int]) -> dict[int, bytes]:
    """The string of each automaton state (the shortest input that reaches it)."""
    strings = {0: b""}
    queue = deque([0])
    while queue:
        state = queue.popleft()
        for byte in range(256):
            target = next_move[(state << 8) + byte]
            if target not in strings:
                strings[target] = strings[state] + bytes((byte,))
                queue.append(target)
    return strings


@lru_cache(maxsize=1)
def _model() -> _Model:
    from langid.langid import LanguageIdentifier, model

    identifier = LanguageIdentifier.from_modelstring(model, norm_probs=True)
    feature_log_prob = np.asarray(identifier.nb_ptc, dtype=np.float64)
    states = len(identifier.tk_nextmove) >> 8
    state_log_prob = np.zeros((states, feature_log_prob.shape[1]), dtype=np.float64)
    for state, features in identifier.tk_output.items():
        for feature in features:
            state_log_prob[state] += feature_log_prob[feature]
    strings = _node_strings(identifier.tk_nextmove)
    if {len(string) for string in strings.values()} != {0, 1, 2, 3, 4}:
        raise RuntimeError("langid's model has features longer than 4 bytes; "
                           "streams.language needs updating for it")
    depth = np.zeros(states + 1, dtype=np.intp)
    for state, string in strings.items():
        depth[state] = len(string)
    # The automaton's move from q on b is the longest suffix of string(q) + b that is a
    # node: the child exactly when it is one byte deeper.
    moves = np.asarray(identifier.tk_nextmove, dtype=np.intp).reshape(states, 256)
    child = np.where(depth[moves] == depth[:states, None] + 1, moves, states)
    child = np.concatenate([child, np.full((1, 256), states, dtype=np.intp)]).ravel()
    return _Model(
        state_log_prob=state_log_prob,
        log_prior=np.asarray(identifier.nb_pc, dtype=np.float64),
        languages=tuple(str(c) for c in identifier.nb_classes),
        child=child,
        dead=states,
    )


def _states(model: _Model, samples: Sequence[bytes]) -> npt.NDArray[np.intp]:
    """The automaton state after each byte of each sample (samples concatenated)."""
    lengths = np.fromiter(map(len, samples), dtype=np.intp, count=len(samples))
    data = np.frombuffer(b"".join(samples), dtype=np.uint8).astype(np.intp)
    first_bytes = (np.cumsum(lengths) - lengths)[lengths > 0]
    child, dead = model.child, model.dead
    node = child[data]  # the 1-byte strings: children of the root (state 0)
    states = np.where(node == dead, 0, node)
    before = np.empty_like(node)
    for _ in range(3):  # the 2-, 3- and 4-byte strings
        before[1:] = node[:-1]
        before[:1] = dead
        before[first_bytes] = dead  # a string never reaches back into the previous sample
        before *= 256
        before += data
        node = child[before]
        found = node != dead
        states[found] = node[found]
    return states


def classify_many(texts: Sequence[str]) -> list[tuple[str, float]]:
    """ISO 639-1 code and normalized probability of each text's language (langid.py's)."""
    if not texts:
        return []
    from scipy.sparse import csr_matrix

    model = _model()
    samples = [text.encode("utf-8") for text in texts]
    indptr = np.zeros(len(samples) + 1, dtype=np.intp)
    np.cumsum([len(s) for s in samples], out=indptr[1:])
    states = _states(model, samples)
    visits = csr_matrix((np.ones(len(states)), states, indptr),
                        shape=(len(samples), len(model.state_log_prob)))
    log_prob = np.asarray(visits @ model.state_log_prob) + model.log_prior
    best = log_prob.argmax(axis=1)
    # langid's norm_probs: p_best = 1 / sum(exp(lp - lp_best)), stable since lp_best is max.
    confidence = 1.0 / np.exp(log_prob - log_prob[np.arange(len(best)), best][:, None]
                              ).sum(axis=1)
    return [(model.languages[b], float(c)) for b, c in zip(best.tolist(), confidence,
                                                          strict=True)]


def classify(text: str) -> tuple[str, float]:
    """ISO 639-1 code of `text`'s language and its normalized probability (langid.py's)."""
    return classify_many([text])[0]
