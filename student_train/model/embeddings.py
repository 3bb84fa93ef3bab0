"""Conditioning and positions: sinusoidal scalar embeddings, adaLN modulation, 3D RoPE."""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal(values: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """(B,) scalars -> (B, dim) sin/cos features. sigma and the step size d live in [0, 1];
    scale 1000 puts them on the teacher's timestep axis (DESIGN 4.1: timestep = 1000 sigma)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=values.device, dtype=torch.float32) / half)
    angles = values.float()[:, None] * scale * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ScalarEmbedding(nn.Module):
    """An MLP over sinusoidal features of a scalar: the noise level sigma, or the step size d
    (d = 0: instantaneous velocity; d > 0: average velocity of a jump from sigma to sigma - d)."""

    def __init__(self, dim: int, freq_dim: int = 128):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal(values, self.freq_dim).to(self.mlp[0].weight.dtype))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (B, T, D) scaled and shifted per sample by (B, D) vectors."""
    return torch.addcmul(shift[:, None], x, 1 + scale[:, None])


def rope_tables(grid: tuple[int, int, int], head_dim: int, *, frame_offset: int | torch.Tensor = 0,
                spatial_step: int = 1, theta: float = 10000.0, device=None,
                dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (T, head_dim) of 3D RoPE in rotate-half layout for a (frames, rows, cols) grid.

    Channel i pairs with i + head_dim/2. A third of the pairs each encode frame, row and column;
    left-over pairs get angle 0 (cos 1, sin 0: unrotated). ``frame_offset`` (int or 0-d tensor)
    is the absolute index of the first frame (streaming); ``spatial_step`` scales row/column
    positions so that a strided grid keeps the full grid's coordinates (SSA).
    """
    f, h, w = grid
    pairs = head_dim // 2
    third = pairs // 3
    inv = 1.0 / (theta ** (torch.arange(third, device=device, dtype=torch.float32) / max(third, 1)))
    ff = torch.arange(f, device=device, dtype=torch.float32) + frame_offset
    hh = torch.arange(h, device=device, dtype=torch.float32) * spatial_step
    ww = torch.arange(w, device=device, dtype=torch.float32) * spatial_step
    af = (ff[:, None] * inv)[:, None, None, :].expand(f, h, w, third)
    ah = (hh[:, None] * inv)[None, :, None, :].expand(f, h, w, third)
    aw = (ww[:, None] * inv)[None, None, :, :].expand(f, h, w, third)
    angles = torch.cat([af, ah, aw], dim=-1).reshape(f * h * w, 3 * third)
    angles = torch.nn.functional.pad(angles, (0, pairs - 3 * third))  # unrotated left-overs
    angles = torch.cat([angles, angles], dim=-1)  # (T, head_dim): rotate-half layout
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (..., T, head_dim) rotated by tables (T, head_dim): x cos + rotate_half(x) sin."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return torch.addcmul(x * cos, rotated, sin)
