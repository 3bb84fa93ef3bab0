"""Stage-2 batches: a trajectory's cached noise, x0 and text, plus its keyed random draws.

Every random number of a row (the DMD and critic re-noising levels and noises, the noise a
finished chunk is committed with at ``context_sigma``) is a function of
(seed, epoch, sample id), as in stage 1 (``record_uniforms``): a resumed run and any split of
the batch over ranks see the same rows. No teacher states are read: the rollout starts from the
cached noise and the regression target is the cached x0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cache_schema import flow

from ..text import pad_text
from .losses import Renoise

AR_FIELDS = ("noise", "x0", "text_emb", "prompt")  # prompt: for a real score that reads text
_ROW_KEY = 0xA12  # a 4-word key: a stream apart from stage 1's (seed, epoch, id) draws


@dataclass
class ARBatch:
    noise: torch.Tensor  # (B, C, F, H, W) the trajectories' initial noise (sigma 1)
    x0: torch.Tensor  # (B, C, F, H, W) their final clean latents
    text: torch.Tensor  # (B, L, D)
    text_mask: torch.Tensor  # (B, L) bool
    dmd: Renoise  # re-noising of the generated video for the DMD loss
    critic: Renoise  # re-noising for the critic's flow-matching loss
    context_noise: torch.Tensor  # (B, C, F, H, W) committed chunks' noise at context_sigma > 0
    prompts: list[str]

    def __len__(self) -> int:
        return self.noise.shape[0]


def row_draws(seed: int, epoch: int, sample_id: str, shape: tuple[int, ...]
              ) -> tuple[np.ndarray, np.ndarray]:
    """(2,) uniforms and (3, *shape) standard normals: [DMD, critic, context]. The normals are
    drawn in that order, so the DMD and critic noises equal those of the earlier (2, ...) draw."""
    rng = np.random.default_rng([seed, epoch, int(sample_id[:15], 16), _ROW_KEY])
    return rng.random(2), rng.standard_normal((3, *shape), dtype=np.float32)


def draw_sigma(u: torch.Tensor, sigma_range: tuple[float, float], shift: float) -> torch.Tensor:
    """Noise levels of the DMD / critic losses from uniforms u in [0, 1).

    shift == 1: uniform on [lo, hi] (the earlier draw). shift > 1: Self-Forcing's time-shifted
    draw sigma = s u / (1 + (s - 1) u), clamped to [lo, hi]; it puts most draws at high noise,
    where a generator's mode is decided (s = 5: median sigma 0.83).
    """
    lo, hi = sigma_range
    if shift == 1.0:
        return lo + u * (hi - lo)
    return flow.shift_sigma(u, shift).clamp(lo, hi)


def collate_ar(records: list[dict], max_text_len: int, *, seed: int, sigma_range: tuple[float, float],
               device, dtype=torch.float32, sigma_shift: float = 1.0) -> ARBatch:
    """records carry ``_epoch`` (the loader's epoch when they were read)."""
    tensor = lambda key: torch.from_numpy(np.stack([r[key] for r in records])).to(device, dtype)
    text, mask = pad_text(records, max_text_len)
    shape = tuple(records[0]["noise"].shape)
    draws = [row_draws(seed, r["_epoch"], r["sample_id"], shape) for r in records]
    u = torch.from_numpy(np.stack([d[0] for d in draws])).to(device, dtype)  # (B, 2)
    eps = torch.from_numpy(np.stack([d[1] for d in draws])).to(device, dtype)  # (B, 2, C, F, H, W)
    sigma = draw_sigma(u, sigma_range, sigma_shift)
    return ARBatch(noise=tensor("noise"), x0=tensor("x0"), text=text.to(device, dtype),
                   text_mask=mask.to(device), dmd=Renoise(sigma[:, 0], eps[:, 0]),
                   critic=Renoise(sigma[:, 1], eps[:, 1]), context_noise=eps[:, 2],
                   prompts=[str(r.get("prompt", "")) for r in records])
