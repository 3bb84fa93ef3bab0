"""Trajectories of Wan 2.2's cache shape without a Wan teacher (bench_codec.py --synthetic).

No teacher runs at 16x21x60x104 on this machine, and upsampling tiny-Wan's recorded states is
not a trajectory (the states no longer follow from the velocities). So the velocity field is
synthetic but the trajectory is a real solve of it, as the recorder would store it:

* a clean target per sample: a smooth latent (a coarse random grid, linearly upsampled) plus a
  fine texture of a tenth of its amplitude; v_uncond aims at a blurrier version of it;
* the flow-matching velocity towards the target, v(x, sigma) = (x - target(sigma)) / sigma,
  where the target drifts with sigma (the model's estimate sharpening) and carries a small
  per-step error field (a network is not a smooth function of its input: amplitude
  ``--model-error``, 0.01 of the latent scale by default);
* CFG v = v_uncond + g (v_cond - v_uncond), g = 4 above sigma 0.875 and 3 below (the recipe's
  two experts), 40 steps of shift-12 sigmas, integrated in float32 by Euler or by second-order
  Adams-Bashforth (``ab2``: a multistep solver, as UniPC is), 8 uniformly kept steps stored as
  float16; text embeddings 512 x 4096 of which the first 40-120 tokens are non-zero.

Bytes and MB/s depend on this field only through how predictable it is; say which one you ran.
"""

from __future__ import annotations

import hashlib

import numpy as np

from cache_schema.fields import CacheLayout

F32 = np.float32
SHIFT, STEPS, BOUNDARY, GUIDANCE = 12.0, 40, 0.875, (4.0, 3.0)
TEXT_DIM, TEXT_LEN = 4096, 512


def _upsample(a: np.ndarray, axis: int, n: int) -> np.ndarray:
    src = np.linspace(0, a.shape[axis] - 1, n, dtype=F32)
    lo = np.floor(src).astype(np.intp)
    hi = np.minimum(lo + 1, a.shape[axis] - 1)
    t = (src - lo).reshape([n if k == axis else 1 for k in range(a.ndim)])
    return np.take(a, lo, axis) * (1 - t) + np.take(a, hi, axis) * t


def smooth(rng: np.random.Generator, shape: tuple[int, ...], cell: int) -> np.ndarray:
    """A smooth (C, F, H, W) field: a coarse normal grid every ``cell`` pixels, upsampled."""
    c, f, h, w = shape
    out = rng.standard_normal((c, max(2, f // 3), max(2, h // cell), max(2, w // cell)), F32)
    for axis, n in ((1, f), (2, h), (3, w)):
        out = _upsample(out, axis, n)
    return out.astype(F32)


def sigmas(steps: int = STEPS, shift: float = SHIFT) -> np.ndarray:
    t = np.linspace(1.0, 0.0, steps + 1)[:-1]
    return (shift * t / (1 + (shift - 1) * t)).astype(F32)


def keep_uniform(steps: int, count: int) -> tuple[int, ...]:
    return tuple(int(k) for k in np.linspace(0, steps, count, endpoint=False).round())


def layout(shape: tuple[int, int, int, int], keep: tuple[int, ...]) -> CacheLayout:
    return CacheLayout(latent_shape=shape, num_steps=STEPS, keep_steps=keep, text_dim=TEXT_DIM,
                       max_text_len=TEXT_LEN)


def trajectory(shape: tuple[int, int, int, int], seed: int, keep: tuple[int, ...], *,
               solver: str = "euler", model_error: float = 0.01) -> dict:
    """One record of the cache contract (half values, float32 schedule) for sample ``seed``."""
    rng = np.random.default_rng(seed)
    target = smooth(rng, shape, 8) + F32(0.1) * rng.standard_normal(shape, F32)
    blurry = smooth(rng, shape, 16) * F32(0.5) + F32(0.5) * target
    drift = smooth(rng, shape, 4) * F32(0.2)
    noise = rng.standard_normal(shape, F32)
    s = sigmas()
    x, prev_v = noise.copy(), None
    states, v_cond, v_uncond = [], [], []
    for i in range(STEPS):
        err = F32(model_error) * rng.standard_normal(shape, F32)
        vc = (x - (target + s[i] * drift)) / s[i] + err
        vu = (x - (blurry + s[i] * drift)) / s[i] + err
        g = F32(GUIDANCE[0] if s[i] >= BOUNDARY else GUIDANCE[1])
        v = vu + g * (vc - vu)
        if i in keep:
            states.append(x.astype(np.float16))
            v_cond.append(vc.astype(np.float16))
            v_uncond.append(vu.astype(np.float16))
        h = (s[i + 1] if i + 1 < STEPS else F32(0)) - s[i]
        step = v if solver == "euler" or prev_v is None else \
            v + (h / (2 * (s[i] - s[i - 1]))) * (v - prev_v)
        x, prev_v = x + h * step, v
    kept = list(keep)
    tokens = int(rng.integers(40, 121))
    text = np.zeros((tokens, TEXT_DIM), np.float16)
    text[:] = rng.standard_normal((tokens, TEXT_DIM), F32) * F32(0.2)
    prompt = f"synthetic prompt {seed}"
    return {
        "sample_id": hashlib.sha256(f"{prompt}/{seed}".encode()).hexdigest()[:32],
        "prompt": prompt, "negative_prompt": "", "seed": seed,
        "noise": noise.astype(np.float16), "states": np.stack(states),
        "v_cond": np.stack(v_cond), "v_uncond": np.stack(v_uncond),
        "sigmas": s[kept].copy(), "timesteps": (s[kept] * 1000).astype(F32),
        "guidance": np.array([GUIDANCE[0] if s[k] >= BOUNDARY else GUIDANCE[1] for k in kept], F32),
        "expert": np.array([0 if s[k] >= BOUNDARY else 1 for k in kept], np.uint8),
        "x0": x.astype(np.float16), "text_emb": text, "neg_text_emb": text[:8].copy(),
    }
