"""Small statistics for the oracle's verdicts: intervals and tests on counts (scipy)."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

Z95 = 1.959963984540054


def wilson(hits: float, n: int, z: float = Z95) -> list[float]:
    """95% Wilson score interval of a rate hits / n ([0, 1] when n = 0)."""
    if n <= 0:
        return [0.0, 1.0]
    p = hits / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return [max(0.0, centre - half), min(1.0, centre + half)]


def chi_square_uniform(counts: np.ndarray) -> float:
    """p-value of counts under equal cell probabilities (1.0 for fewer than two cells)."""
    counts = np.asarray(counts, dtype=float)
    if len(counts) < 2 or counts.sum() == 0:
        return 1.0
    return float(stats.chisquare(counts).pvalue)


def binomial_p(hits: int, n: int, p: float = 0.5) -> float:
    """Two-sided exact binomial test p-value."""
    if n == 0:
        return 1.0
    return float(stats.binomtest(int(hits), int(n), p).pvalue)


def tv_floor(n: int, cells: int, draws: int = 2000, seed: int = 0) -> float:
    """Mean total variation between uniform cell weights and the frequencies of ``n`` draws
    from them: what a perfect sampler shows at this sample size (the noise floor of TV)."""
    if n == 0 or cells < 2:
        return 0.0
    counts = np.random.default_rng(seed).multinomial(n, np.full(cells, 1 / cells), size=draws)
    return float(0.5 * np.abs(counts / n - 1 / cells).sum(1).mean())


__all__ = ["binomial_p", "chi_square_uniform", "tv_floor", "wilson"]
