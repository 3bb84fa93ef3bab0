"""The analytic teacher's tasks: procedural mode videos of any clip length (DESIGN 4.3).

A task turns a class (object, colour, motion) into K mode videos mu_k (C, F, H, W) and says
what each mode is made of (``ModeFactors``), so the oracle can score factor by factor. Every
task is an equal-weight isotropic Gaussian mixture around these means, so the exact velocity
and the exact scores keep one form for all of them.

- ``motion`` (the original task): the object starts at one of K positions and moves one pixel
  per frame. First-order Markov: the previous frame says where the next one is.
- ``memory``: the clip is periodic with period P = visible + gap frames. The object is seen
  for ``visible_frames`` frames, then vanishes for ``gap_frames`` frames, then reappears, and
  so on to the end of the clip, whatever its length. It carries an identity code (a channel
  tint, one of ``identity_codes``, not named by the prompt) that is visible only while the
  object is, and must be the same at every reappearance; halfway through the first gap it
  bounces (reverses its motion) with probability 1/2 or goes on, so that the clip after the
  first gap stays diverse. Nothing visible inside the gap tells the code or the branch: a
  student must carry them across ``gap_frames`` frames of blank video, longer than the
  receptive field of any local mixer it has (a conv, a short attention window).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

SHAPES = {
    "square": np.ones((3, 3)),
    "ring": np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=float),
    "cross": np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=float),
    "bar": np.array([[0, 0, 0], [1, 1, 1], [0, 0, 0]], dtype=float),
}
MOTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0), "still": (0, 0)}
TASKS = ("motion", "memory")
CODE_TINT = 0.75  # norm of an identity tint against the colour pattern's 1.0


def hash_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


@dataclass(frozen=True)
class ModeFactors:
    """What the K modes of every class are made of (the same for all classes), each (K,) int:
    the start position, the identity code (0 where the task has none) and the branch
    (1 = went on, 0 = bounced; 1 where the task has none)."""

    start: np.ndarray
    code: np.ndarray
    branch: np.ndarray
    codes: int  # identity codes of the task (1: none)
    branches: int  # 2 for the memory task, 1 otherwise


@dataclass(frozen=True)
class Period:
    """The memory task's timing: which frames show the object, and when it may bounce."""

    visible: int
    gap: int

    @property
    def length(self) -> int:
        return self.visible + self.gap

    @property
    def bounce_frame(self) -> int:  # the last frame of the old motion, mid-gap
        return self.visible + self.gap // 2

    def visible_mask(self, frames: int) -> np.ndarray:
        return (np.arange(frames) % self.length) < self.visible

    def phases(self, frames: int) -> list[range]:
        """The visible phases inside a clip of ``frames`` frames, in order."""
        return [range(start, min(start + self.visible, frames))
                for start in range(0, frames, self.length)]


def colour_patterns(colours: tuple[str, ...], channels: int) -> dict[str, np.ndarray]:
    """A fixed channel pattern per colour word, norm 1 at 4 channels (sqrt(C) / 2)."""
    out = {}
    for colour in colours:
        vec = np.random.default_rng(hash_int(f"colour:{colour}")).standard_normal(channels)
        out[colour] = vec / np.linalg.norm(vec) * np.sqrt(channels) / 2
    return out


def code_tints(codes: int, channels: int) -> np.ndarray:
    """(codes, C) identity tints: near-orthogonal directions of norm CODE_TINT."""
    raw = np.random.default_rng(hash_int(f"identity-codes:{codes}:{channels}")).standard_normal(
        (max(codes, channels), channels))
    basis = np.linalg.qr(raw.T)[0].T if codes <= channels else raw / np.linalg.norm(raw, axis=1, keepdims=True)
    return CODE_TINT * basis[:codes]


def tinted(pattern: np.ndarray, tint: np.ndarray) -> np.ndarray:
    """The colour pattern turned towards a tint, at one norm for every tint: modes that differ
    only by their code then have equal norms, and a guided sampler has no reason to favour one."""
    mixed = pattern + tint
    return mixed / np.linalg.norm(mixed) * np.hypot(np.linalg.norm(pattern), np.linalg.norm(tint))


def _canvas(shape: np.ndarray, height: int, width: int, y: int, x: int) -> np.ndarray:
    canvas = np.zeros((height, width))
    canvas[:3, :3] = shape
    return np.roll(canvas, (y, x), axis=(0, 1))


def motion_modes(obj: str, pattern: np.ndarray, motion: str, starts: np.ndarray,
                 shape: tuple[int, int, int, int]) -> np.ndarray:
    """(K, C, F, H, W): the object from each start, one pixel per frame."""
    c, f, h, w = shape
    dy, dx = MOTIONS[motion]
    means = np.zeros((len(starts), c, f, h, w))
    for k, (y0, x0) in enumerate(starts):
        for t in range(f):
            means[k, :, t] = pattern[:, None, None] * _canvas(SHAPES[obj], h, w, y0 + dy * t, x0 + dx * t)
    return means


def memory_factors(positions: int, codes: int) -> ModeFactors:
    grid = np.array([(p, code, branch) for p in range(positions) for code in range(codes)
                     for branch in (1, 0)])
    return ModeFactors(start=grid[:, 0], code=grid[:, 1], branch=grid[:, 2], codes=codes, branches=2)


def motion_factors(positions: int) -> ModeFactors:
    k = np.arange(positions)
    return ModeFactors(start=k, code=np.zeros_like(k), branch=np.ones_like(k), codes=1, branches=1)


def memory_modes(obj: str, pattern: np.ndarray, motion: str, starts: np.ndarray,
                 factors: ModeFactors, tints: np.ndarray, period: Period,
                 shape: tuple[int, int, int, int]) -> np.ndarray:
    """(K, C, F, H, W): visible phases only, tinted by the code, bounced or not mid-gap."""
    c, f, h, w = shape
    dy, dx = MOTIONS[motion]
    visible = period.visible_mask(f)
    turn = period.bounce_frame
    means = np.zeros((len(factors.start), c, f, h, w))
    for k, (p, code, branch) in enumerate(zip(factors.start, factors.code, factors.branch)):
        y0, x0 = starts[p]
        channels = tinted(pattern, tints[code])
        for t in np.flatnonzero(visible):
            steps = t if t <= turn else turn + (t - turn) * (1 if branch else -1)
            means[k, :, t] = channels[:, None, None] * _canvas(SHAPES[obj], h, w, y0 + dy * steps,
                                                               x0 + dx * steps)
    return means


__all__ = ["CODE_TINT", "MOTIONS", "SHAPES", "TASKS", "ModeFactors", "Period", "code_tints",
           "colour_patterns", "hash_int", "memory_factors", "memory_modes", "motion_factors",
           "motion_modes", "tinted"]
