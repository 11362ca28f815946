"""Language identification with langid.py's shipped model, evaluated sparsely.

langid.py (`langid.classify`) multiplies a dense vector of all 7,480 byte n-gram features
by the 7,480 x 97 naive Bayes matrix on every call: about 2.4 ms, 40% of the pipeline.
A 160-character sample enters at most a few hundred of those features, so this module
keeps langid's tokenizer (its Aho-Corasick automaton) and model, folds the features each
automaton state emits into one row per state at load time, and sums the rows of the
states the text passes through. The answer is langid's, to rounding (held by
`tests/streams/test_language.py`), at about 1/50th of the cost. py3langid does the same
but needs numpy 2, which this project cannot take.
"""

from __future__ import annotations

import logging
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
    next_move: list[int]


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
    return _Model(
        state_log_prob=state_log_prob,
        log_prior=np.asarray(identifier.nb_pc, dtype=np.float64),
        languages=tuple(str(c) for c in identifier.nb_classes),
        next_move=list(identifier.tk_nextmove),
    )


def _states(model: _Model, data: bytes) -> list[int]:
    """The automaton state after each byte, as langid's `instance2fv` walks it."""
    next_move = model.next_move
    state = 0
    visited = []
    append = visited.append
    for byte in data:
        state = next_move[(state << 8) + byte]
        append(state)
    return visited


def classify(text: str) -> tuple[str, float]:
    """ISO 639-1 code of `text`'s language and its normalized probability (langid.py's)."""
    model = _model()
    states = _states(model, text.encode("utf-8"))
    log_prob = model.log_prior.copy()
    if states:
        log_prob += model.state_log_prob[states].sum(axis=0)
    best = int(np.argmax(log_prob))
    # langid's norm_probs: p_best = 1 / sum(exp(lp - lp_best)), stable since lp_best is max.
    confidence = 1.0 / float(np.exp(log_prob - log_prob[best]).sum())
    return model.languages[best], confidence
