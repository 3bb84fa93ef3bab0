"""Aggregation over training seeds, and the Pareto front of a cost-quality plot.

Each training seed is one draw of "train this student with this recipe": the spread between
seeds is the noise a claim about a student has to beat (the per-seed Wilson intervals of the
oracle's scores are evaluation noise only). A figure over seeds is their mean with the 95%
Student-t half-width, t(0.975, n - 1) * sd / sqrt(n); one seed has no spread to show. A
difference between two students is Welch's: their seeds are independent draws with their own
spreads, so the interval takes each one's variance and the Welch-Satterthwaite degrees of freedom
(the same test as ``scipy.stats.ttest_ind(equal_var=False)``). When the two students share a
training stage seed by seed (a stage-2 ablation starts from the reference's own S2DiT-KD of each
seed: pipeline/compare/sharing.py) and are scored on the same noise, seed k of one is paired with
seed k of the other: what the shared KD model contributes cancels in their difference, and the
interval is the paired t interval of the per-seed differences (``scipy.stats.ttest_rel``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True, slots=True)
class SeedMean:
    """Mean over training seeds and the t half-width of its interval (None for one seed)."""

    mean: float
    half: float | None
    n: int

    def text(self, digits: int = 3) -> str:
        """``0.812 ± 0.031``, or ``0.812 (1 seed)``."""
        if self.half is None:
            return f"{self.mean:.{digits}f} (1 seed)"
        return f"{self.mean:.{digits}f} \u00b1 {self.half:.{digits}f}"

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "half": self.half, "n": self.n}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SeedMean:
        return cls(mean=float(data["mean"]), half=None if data["half"] is None else float(data["half"]),
                   n=int(data["n"]))


def seed_mean(values: Sequence[float], confidence: float = CONFIDENCE) -> SeedMean:
    """Mean of one value per training seed, with the half-width of its ``confidence`` t
    interval (the seeds' sample standard deviation, n - 1 degrees of freedom)."""
    v = [float(x) for x in values]
    if not v or not all(math.isfinite(x) for x in v):
        raise ValueError(f"seed_mean needs finite values, one per seed; got {list(values)!r}")
    n, mean = len(v), sum(v) / len(v)
    if n == 1:
        return SeedMean(mean=mean, half=None, n=1)
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1))
    t = float(stats.t.ppf(0.5 + confidence / 2, n - 1))
    return SeedMean(mean=mean, half=t * sd / math.sqrt(n), n=n)


@dataclass(frozen=True, slots=True)
class SeedDifference:
    """mean(a) - mean(b) over two students' training seeds, the half-width of its Welch
    interval (None when either has one seed: no spread to test against)."""

    diff: float
    half: float | None
    n_a: int
    n_b: int
    paired: bool = False  # seed k of a with seed k of b (a shared stage): the paired t interval

    @property
    def verdict(self) -> str:
        """"ahead" / "behind": the interval is above / below 0; "not separated": it holds 0;
        "one seed": no interval."""
        if self.half is None:
            return "one seed"
        if self.diff - self.half > 0:
            return "ahead"
        return "behind" if self.diff + self.half < 0 else "not separated"

    def text(self, digits: int = 3) -> str:
        """``+0.231 [+0.052, +0.410]``, or ``+0.231 (1 seed)``."""
        if self.half is None:
            return f"{self.diff:+.{digits}f} (1 seed)"
        lo, hi = self.diff - self.half, self.diff + self.half
        return f"{self.diff:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"

    def to_json(self) -> dict[str, Any]:
        return {"diff": self.diff, "half": self.half, "n_a": self.n_a, "n_b": self.n_b, "verdict": self.verdict,
                "paired": self.paired}

    @property
    def test(self) -> str:
        """The interval's name in a sentence."""
        return "paired" if self.paired else "Welch"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SeedDifference:
        return cls(diff=float(data["diff"]), half=None if data["half"] is None else float(data["half"]),
                   n_a=int(data["n_a"]), n_b=int(data["n_b"]), paired=bool(data.get("paired", False)))


def seed_difference(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> SeedDifference:
    """Student a's mean minus student b's over their training seeds (one value per seed each),
    with the half-width of Welch's ``confidence`` interval."""
    ma, mb = seed_mean(a, confidence), seed_mean(b, confidence)
    diff = ma.mean - mb.mean
    if ma.n == 1 or mb.n == 1:
        return SeedDifference(diff=diff, half=None, n_a=ma.n, n_b=mb.n)
    va = sum((float(x) - ma.mean) ** 2 for x in a) / (ma.n - 1) / ma.n  # squared standard errors
    vb = sum((float(x) - mb.mean) ** 2 for x in b) / (mb.n - 1) / mb.n
    if len(set(a)) == 1 and len(set(b)) == 1 or va + vb == 0.0:  # no spread (the float mean may round)
        return SeedDifference(diff=diff, half=0.0, n_a=ma.n, n_b=mb.n)
    df = (va + vb) ** 2 / (va ** 2 / (ma.n - 1) + vb ** 2 / (mb.n - 1))
    t = float(stats.t.ppf(0.5 + confidence / 2, df))
    return SeedDifference(diff=diff, half=t * math.sqrt(va + vb), n_a=ma.n, n_b=mb.n)


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> SeedDifference:
    """mean(a - b) over seeds paired by index (a[k] and b[k]: the same seed, sharing a trained
    stage), with the half-width of the paired t interval of the differences."""
    if len(a) != len(b):
        raise ValueError(f"a paired difference needs one value of each per seed; got {len(a)} and {len(b)}")
    d = seed_mean([float(x) - float(y) for x, y in zip(a, b, strict=True)], confidence)
    return SeedDifference(diff=d.mean, half=d.half, n_a=d.n, n_b=d.n, paired=True)


def pareto_front(points: Mapping[str, tuple[float, float]]) -> list[str]:
    """The names of the points (cost, quality) that no other point beats: none has a cost as
    low and a quality as high with one of them strictly better. Sorted by cost."""
    front = [name for name, (x, y) in points.items()
             if not any(ox <= x and oy >= y and (ox < x or oy > y)
                        for other, (ox, oy) in points.items() if other != name)]
    return sorted(front, key=lambda name: points[name])
