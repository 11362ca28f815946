"""Toxicity scores of alt-profanity-check's shipped model, computed without sklearn's loops.

The package's `predict_prob` is a TF-IDF vectorizer (lowercase, `\\b\\w\\w+\\b` tokens,
English stop words, l2 norm) into a `CalibratedClassifierCV` of five sigmoid-calibrated
`LinearSVC`s, averaged. Its cost is sklearn's per-token Python loop that builds the
sparse matrix (about 0.17 ms a turn). The model is linear up to the norm, so this module
folds idf into the five weight vectors once, counts each text's in-vocabulary tokens,
and computes the same probabilities with one sparse product per batch. The figures
equal `predict_prob`'s to 1e-9 (held by `tests/streams/test_toxicity.py`); when the
installed package does not have that shape, `predict_prob` itself is used.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from streams.tokens import WordIds, run_bounds

logger = logging.getLogger(__name__)

_TOKEN = re.compile(r"(?u)\b\w\w+\b")


@dataclass(frozen=True)
class _LinearModel:
    vocabulary_from_1: dict[str, int]  # token -> column + 1
    idf: npt.NDArray[np.float64]  # (vocabulary,)
    weights: npt.NDArray[np.float64]  # (vocabulary, classifiers): coef * idf
    intercepts: npt.NDArray[np.float64]  # (classifiers,)
    slopes: npt.NDArray[np.float64]  # sigmoid a_ per classifier
    offsets: npt.NDArray[np.float64]  # sigmoid b_ per classifier


def _unpack(vectorizer: Any, model: Any) -> _LinearModel | None:
    """The linear pieces of the shipped model, or None when it is not the expected shape."""
    try:
        params = vectorizer.get_params()
        expected = {"analyzer": "word", "lowercase": True, "ngram_range": (1, 1),
                    "norm": "l2", "use_idf": True, "sublinear_tf": False, "binary": False,
                    "token_pattern": _TOKEN.pattern, "preprocessor": None, "tokenizer": None,
                    "strip_accents": None}
        if any(params.get(k) != v for k, v in expected.items()):
            return None
        calibrated = model.calibrated_classifiers_
        if list(model.classes_) != [0, 1] or any(
                c.method != "sigmoid" or len(c.calibrators) != 1 for c in calibrated):
            return None
        idf = np.asarray(vectorizer.idf_, dtype=np.float64)
        coef = np.stack([np.asarray(c.estimator.coef_[0], dtype=np.float64) for c in calibrated],
                        axis=1)
        return _LinearModel(
            vocabulary_from_1={str(k): int(v) + 1 for k, v in vectorizer.vocabulary_.items()},
            idf=idf,
            weights=np.ascontiguousarray(coef * idf[:, None]),
            intercepts=np.array([float(c.estimator.intercept_[0]) for c in calibrated]),
            slopes=np.array([float(c.calibrators[0].a_) for c in calibrated]),
            offsets=np.array([float(c.calibrators[0].b_) for c in calibrated]),
        )
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None


@lru_cache(maxsize=1)
def _model() -> tuple[_LinearModel | None, Any]:
    from profanity_check import profanity_check

    linear = _unpack(profanity_check.vectorizer, profanity_check.model)
    if linear is None:
        logger.warning("alt-profanity-check's model is not the expected TF-IDF + calibrated "
                       "LinearSVC; scoring with its own (slower) predict_prob")
    return linear, profanity_check.predict_prob


def scores(texts: Sequence[str], *, tokens: Sequence[list[str]] | None = None) -> list[float]:
    """Probability that each text is toxic (0..1), as `profanity_check.predict_prob` gives.

    Args:
        tokens: `\\w+` runs of each lowercased text, when the caller has them already.
    """
    if not texts:
        return []
    linear, predict_prob = _model()
    if linear is None:
        return [float(p) for p in predict_prob(list(texts))]
    # Columns from 1, so that filter(None, ...) drops the unknown words in C. One-letter
    # words, which `\w\w+` never yields, are never in the vocabulary either.
    vocabulary = linear.vocabulary_from_1
    indices: list[int] = []
    indptr = [0]
    for index, text in enumerate(texts):
        words = _TOKEN.findall(text.lower()) if tokens is None else tokens[index]
        indices.extend(filter(None, map(vocabulary.get, words)))
        indptr.append(len(indices))
    columns = np.array(indices, dtype=np.intp)
    columns -= 1
    return _probabilities(linear, columns, np.array(indptr, dtype=np.intp))


def scores_of_ids(texts: Sequence[str], word_ids: npt.NDArray[np.intp],
                  bounds: npt.NDArray[np.intp], words: WordIds) -> list[float]:
    """`scores` of texts whose `\\w+` runs (lowercased) are numbered by `words`.

    Args:
        word_ids: the ids of every text's runs, one text after the other.
        bounds: where each text's ids start in `word_ids`, and the end (texts + 1 values).
    """
    if not texts:
        return []
    linear, predict_prob = _model()
    if linear is None:
        return [float(p) for p in predict_prob(list(texts))]
    vocabulary = linear.vocabulary_from_1
    columns = words.fact("toxicity_column_from_1", lambda word: vocabulary.get(word, 0),
                         np.intp)[word_ids]
    # The same columns, in the same order, that `scores` gathers text by text.
    known = columns > 0
    indptr = run_bounds(known)  # known columns before each word
    columns = columns[known]
    columns -= 1
    return _probabilities(linear, columns, indptr[bounds])


def _probabilities(model: _LinearModel, indices: npt.NDArray[np.intp],
                   indptr: npt.NDArray[np.intp]) -> list[float]:
    from scipy.sparse import csr_matrix

    rows = len(indptr) - 1
    counts = csr_matrix((np.ones(len(indices)), indices, indptr),
                        shape=(rows, len(model.idf)))
    counts.sum_duplicates()
    tfidf = counts.data * model.idf[counts.indices]
    squares = csr_matrix((tfidf * tfidf, counts.indices, counts.indptr), shape=counts.shape)
    norms = np.sqrt(np.asarray(squares.sum(axis=1)).ravel())
    norms[norms == 0] = 1.0  # an empty text is the zero vector, as in sklearn's normalize
    decision = np.asarray(counts @ model.weights) / norms[:, None] + model.intercepts
    calibrated = 1.0 / (1.0 + np.exp(model.slopes * decision + model.offsets))
    probability = calibrated.mean(axis=1)
    return [float(p) for p in probability]
