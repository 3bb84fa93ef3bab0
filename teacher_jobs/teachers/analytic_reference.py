"""Reference samplers of the analytic teacher's distribution: what the oracle's gate is
calibrated and tested against (tests/teacher_jobs/test_memory_task.py, bench/bench_oracle.py).

- ``stream_oracle``: exact streaming, chunk by chunk, from the conditional given the last
  ``reach`` frames: with the whole past, exact draws; with a bounded reach, the best a model of
  that reach can do (the memory task's sanity students at their limit);
- ``degenerate_student``: the failures the old gate passed (shrinkage, ghosting, skewed modes).
"""

from __future__ import annotations

import numpy as np

from .analytic import AnalyticTeacher

DEGENERATE_KINDS = ("scaled", "ghost", "skewed")


def degenerate_student(teacher: AnalyticTeacher, prompts: list[str], kind: str, seed: int = 0) -> np.ndarray:
    """Students built from the oracle's means and its noise s, every class, every mode:

    - ``scaled``: every sample at 0.6 x its mode, no noise (modes assigned evenly);
    - ``ghost``: 0.7 x its mode + 0.3 x another mode of the same class (chosen at random);
    - ``skewed``: the first mode with frequency 0.8, the others sharing 0.2, plus noise s. The
      counts are allocated exactly (round(0.8 n) to mode 0, the rest in turn to the others) and
      shuffled, so that every mode is hit (at 6 modes and 48 samples per class random draws would
      miss some of the 0.04-modes and fail even the legacy coverage check, for an unrelated reason).
    """
    rng = np.random.default_rng(seed)
    classes = np.array([teacher.class_of(p) for p in prompts])
    n, k = len(prompts), teacher.means.shape[1]
    own = (np.arange(n) // len(teacher.classes)) % k
    if kind == "scaled":
        x = 0.6 * teacher.means[classes, own]
    elif kind == "ghost":
        other = (own + 1 + rng.integers(0, k - 1, n)) % k
        x = 0.7 * teacher.means[classes, own] + 0.3 * teacher.means[classes, other]
    else:
        modes = np.zeros(n, int)
        for c in np.unique(classes):
            idx = np.flatnonzero(classes == c)
            first = round(0.8 * len(idx))
            modes[idx] = rng.permutation([0] * first + [1 + i % (k - 1) for i in range(len(idx) - first)])
        x = teacher.means[classes, modes] + teacher.config.s * rng.standard_normal((n, teacher.means.shape[2]))
    return x.reshape(n, *teacher.latent_shape)


def stream_oracle(teacher: AnalyticTeacher, prompts: list[str], *, reach: int | None,
                  chunk_frames: int = 1, seed: int = 0) -> np.ndarray:
    """Exact streaming from the oracle, chunk by chunk, seeing only the last ``reach`` frames.

    Under the mixture p(x) = 1/K sum_k N(x; mu_k, s^2 I) the frames are independent given the
    mode k, so for any window W of past frames and the next chunk X:
        p(X | W) = sum_k p(k | W) N(X; mu_k[X], s^2 I),   p(k | W) ∝ N(W; mu_k[W], s^2 I),
    the mixture posterior restricted to the window (an empty window gives equal weights). Each
    chunk is drawn from it: a mode by the Gumbel-max trick on log p(k | W), then its frames with
    noise s. With ``reach=None`` the window is the whole past, and by the chain rule the clips are
    exact draws from p. With a bounded reach it is the exact conditional given what a model of
    that reach can see, so it is the best such a model can do: once the window holds only blank
    gap frames, every code is equally likely again.
    """
    rng = np.random.default_rng(seed)
    shape = teacher.latent_shape
    frames, s = shape[1], teacher.config.s
    classes = np.array([teacher.class_of(p) for p in prompts])
    k = teacher.means.shape[1]
    out = np.zeros((len(prompts), *shape))
    for c in np.unique(classes):
        idx = np.flatnonzero(classes == c)
        modes = teacher.means[c].reshape(k, *shape)
        x = np.zeros((len(idx), *shape))
        for start in range(0, frames, chunk_frames):
            stop = min(start + chunk_frames, frames)
            lo = 0 if reach is None else max(0, start - reach)
            win = x[:, :, lo:start].reshape(len(idx), 1, -1)
            logp = -((win - modes[:, :, lo:start].reshape(1, k, -1)) ** 2).sum(2) / (2 * s * s)
            pick = (logp + rng.gumbel(size=logp.shape)).argmax(1)
            x[:, :, start:stop] = modes[pick, :, start:stop] + s * rng.standard_normal(
                (len(idx), shape[0], stop - start, *shape[2:]))
        out[idx] = x
    return out


__all__ = ["DEGENERATE_KINDS", "degenerate_student", "stream_oracle"]
