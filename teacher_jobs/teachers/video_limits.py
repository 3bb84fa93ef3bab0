"""The video sizes a teacher can produce, declared by the teacher (issue 28).

Every teacher kind answers ``video_limits(video)`` with one ``SizeGrid`` per key of ``[job]``
(height, width, frames): the values ``step * k + offset`` in ``[lo, hi]``, with the reason for
each bound. ``JobConfig`` asks before any work starts (``s2dit cache generate``, ``cache
estimate``, ``s2dit run`` and ``--plan`` all build one), so a size outside them is one line
naming the key, the value, the allowed values and the nearest valid value, never a shape error
deep inside a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cache_schema.typed_config import ConfigError

if TYPE_CHECKING:
    from .spec import VideoSize

KEYS = ("height", "width", "frames")
# [job]'s ranges (JobConfig.LIMITS uses them): a teacher's grid never reaches past them
MAX_SIDE, MAX_FRAMES = 8192, 4097


@dataclass(frozen=True, kw_only=True, slots=True)
class SizeGrid:
    """Allowed values of one size key: ``step * k + offset`` (k >= 0) within ``[lo, hi]``."""

    step: int = 1
    offset: int = 0
    lo: int = 1
    hi: int = MAX_SIDE
    why_step: str = ""  # e.g. "the VAE's spatial factor 8 x patch 2"
    why_lo: str = ""
    why_hi: str = ""

    def __post_init__(self) -> None:
        if self.step < 1 or not 0 <= self.offset < self.step:
            raise ValueError(f"a size grid needs step >= 1 and 0 <= offset < step, got {self}")

    def allows(self, value: int) -> bool:
        return self.lo <= value <= self.hi and value % self.step == self.offset

    def first(self) -> int:
        """The smallest allowed value (may exceed ``hi``: then none is allowed)."""
        return self.lo + (self.offset - self.lo) % self.step

    def last(self) -> int:
        return self.hi - (self.hi - self.offset) % self.step

    def nearest(self, value: int) -> int | None:
        """The allowed value closest to ``value`` (the smaller one on a tie); None if none."""
        first, last = self.first(), self.last()
        if first > last:
            return None
        below = value - (value - self.offset) % self.step
        candidates = [c for c in (below, below + self.step) if first <= c <= last]
        candidates += [first, last]
        return min(candidates, key=lambda c: (abs(c - value), c))

    def describe(self) -> str:
        if self.step == 1:
            kind = "integers"
        elif self.offset == 0:
            kind = f"multiples of {self.step}"
        else:
            kind = f"{self.step}k+{self.offset}"
        if self.why_step:
            kind += f" ({self.why_step})"
        lo = f"from {self.first()}" + (f" ({self.why_lo})" if self.why_lo else "")
        if self.first() > self.last():
            return f"{kind} {lo} but at most {self.hi}" + (f" ({self.why_hi})" if self.why_hi else "")
        hi = f"to {self.last()}" + (f" ({self.why_hi})" if self.why_hi else "")
        return f"{kind} {lo} {hi}"


@dataclass(frozen=True, kw_only=True, slots=True)
class VideoLimits:
    """What one teacher accepts for each size key; ``teacher`` names it in messages."""

    teacher: str
    height: SizeGrid
    width: SizeGrid
    frames: SizeGrid

    def allows(self, video: VideoSize) -> bool:
        return self.problem(video) is None

    def problem(self, video: VideoSize) -> str | None:
        """One line for the first key outside its grid, or None. A key that some value would
        fix comes first: a grid emptied by the other sizes (a joint bound) blames them."""
        bad = [key for key in KEYS if not getattr(self, key).allows(getattr(video, key))]
        bad.sort(key=lambda k: getattr(self, k).nearest(getattr(video, k)) is None)
        if not bad:
            return None
        key, value = bad[0], getattr(video, bad[0])
        grid: SizeGrid = getattr(self, key)
        near = grid.nearest(value)
        advice = (f"nearest valid value: {near}" if near is not None else
                  "no value is valid with the other settings: change them first")
        return f"[job] {key} = {value}: {self.teacher} allows {grid.describe()}; {advice}"

    def check(self, video: VideoSize) -> None:
        problem = self.problem(video)
        if problem:
            raise ConfigError(problem)
