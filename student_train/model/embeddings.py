"""Conditioning and positions: sinusoidal scalar embeddings, adaLN modulation, 3D RoPE."""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal(values: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """(B,) scalars -> (B, dim) sin/cos features; sigma and step size live in [0, 1]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=values.device) / half)
    angles = values.float()[:, None] * scale * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ScalarEmbedding(nn.Module):
    """An MLP over sinusoidal features of a scalar (noise level sigma or step size d)."""

    def __init__(self, dim: int, freq_dim: int = 128):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal(values, self.freq_dim))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


def rope_angles(grid: tuple[int, int, int], head_dim: int, frame_offset: int = 0,
                device=None) -> torch.Tensor:
    """(T, head_dim/2) rotation angles; a third of the pairs each for frame, row, column."""
    f, h, w = grid
    third = head_dim // 6  # pairs per axis
    inv = 1.0 / (10000 ** (torch.arange(third, device=device, dtype=torch.float32) / third))
    ff = torch.arange(frame_offset, frame_offset + f, device=device, dtype=torch.float32)
    hh = torch.arange(h, device=device, dtype=torch.float32)
    ww = torch.arange(w, device=device, dtype=torch.float32)
    af = (ff[:, None] * inv)[:, None, None, :].expand(f, h, w, third)
    ah = (hh[:, None] * inv)[None, :, None, :].expand(f, h, w, third)
    aw = (ww[:, None] * inv)[None, None, :, :].expand(f, h, w, third)
    return torch.cat([af, ah, aw], dim=-1).reshape(f * h * w, 3 * third)


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate the first 2*P channels of x (B, heads, T, head_dim) by angles (T, P) in pairs;
    channels beyond 6 * (head_dim // 6) stay unrotated."""
    rotated = 2 * angles.shape[-1]
    head, rest = x[..., :rotated], x[..., rotated:]
    x1, x2 = head[..., 0::2], head[..., 1::2]
    cos, sin = angles.cos(), angles.sin()
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)
    return torch.cat([out, rest], dim=-1) if rest.shape[-1] else out
