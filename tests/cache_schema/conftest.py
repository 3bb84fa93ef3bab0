"""Synthetic schema-valid records for cache tests (random values, real shapes and dtypes)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from cache_schema import CacheLayout


def small_layout(num_steps: int = 6, keep=None) -> CacheLayout:
    return CacheLayout(latent_shape=(4, 2, 4, 4), num_steps=num_steps,
                       keep_steps=tuple(keep if keep is not None else range(num_steps)),
                       text_dim=8, max_text_len=6)


def make_records(layout: CacheLayout, n: int, seed: int = 0, prefix: str = "p") -> list[dict]:
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        prompt = f"{prefix} prompt {i} – ünïcode"
        sid = hashlib.sha256(f"{prompt}|{seed}|{i}".encode()).hexdigest()[:32]
        s = layout.num_kept
        length = int(rng.integers(1, layout.max_text_len + 1))
        half = lambda *shape: rng.standard_normal(shape).astype(np.float16)
        records.append({
            "sample_id": sid, "prompt": prompt, "negative_prompt": "blurry", "seed": 1000 + i,
            "noise": half(*layout.latent_shape), "states": half(s, *layout.latent_shape),
            "sigmas": np.linspace(1, 0.1, s, dtype=np.float32),
            "timesteps": np.linspace(1000, 100, s, dtype=np.float32),
            "v_cond": half(s, *layout.latent_shape), "v_uncond": half(s, *layout.latent_shape),
            "guidance": np.full(s, 3.0, np.float32), "expert": (np.arange(s) >= s // 2).astype(np.uint8),
            "x0": half(*layout.latent_shape), "text_emb": half(length, layout.text_dim),
        })
    return records


FINGERPRINT = {"teacher": "synthetic", "steps": 6, "shift": 3.0, "seed": 0}


@pytest.fixture
def layout() -> CacheLayout:
    return small_layout()
