"""Counter-based initial noise (DESIGN 3.1): noise = f(global_seed, sample_id), independent of
batch, micro-batch and worker.

Philox is a counter-based generator: keyed by (global seed, 64 bits of the sample id) it gives
every sample its own stream, so a sample regenerates bit for bit wherever it is computed.
"""

from __future__ import annotations

import numpy as np


def sample_generator(global_seed: int, sample_id: str) -> np.random.Generator:
    key = np.array([int(global_seed) & (2**64 - 1), int(sample_id[:16], 16)], dtype=np.uint64)
    return np.random.Generator(np.random.Philox(key=key))


def initial_noise(global_seed: int, sample_id: str, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal float32 noise of ``shape`` (C, F, H, W) for one sample."""
    return sample_generator(global_seed, sample_id).standard_normal(shape, dtype=np.float32)


def batch_noise(global_seed: int, sample_ids: list[str], shape: tuple[int, ...]) -> np.ndarray:
    """(B, C, F, H, W): one independent stream per sample id."""
    return np.stack([initial_noise(global_seed, sid, shape) for sid in sample_ids])
